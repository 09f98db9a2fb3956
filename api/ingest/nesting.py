"""How deeply a JSON text nests (and, for JSON Lines, how many keys a line holds), found
without parsing it.

Parsers recurse once per level: Python's `json` raises RecursionError (a 500 in the
request, a puzzling failure in the converter), and Arrow's JSON reader overflows its stack
and kills the converter (which then looked like running out of memory). A line of a
million keys makes Arrow build a million columns and abort. A table has no use for either,
so JSON is checked before any parser sees it, in a streaming pass over the bytes: escapes
and strings are set aside, the brackets (and colons) left are counted. Standard library and
NumPy only: the converter imports it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import Any

# Deeper than any table needs, far below what the parsers survive, and what the dataset's
# Parquet copy can hold: Arrow reads Parquet schemas at most 100 levels deep, and each
# level of lists takes two (nested objects become columns and take none).
MAX_JSON_DEPTH = 48
CHUNK_BYTES = 4 << 20

_KEEP = b'"[]{}:\n'
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_QUOTE, _NEWLINE, _COLON = ord('"'), ord("\n"), ord(":")


class TooDeep(ValueError):
    """The text nests deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"nested more than {limit} levels deep")
        self.limit = limit


class TooWide(ValueError):
    """A line of JSON Lines holds more keys than a table may have columns."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} keys in one line")
        self.limit = limit


def too_deep_message(subject: str, limit: int = MAX_JSON_DEPTH) -> str:
    """`subject`: "'name.json'", or "The file"."""
    return (
        f"{subject} holds JSON nested more than {limit} levels deep; Quarry reads at most "
        f"{limit}. Flatten the deeply nested values (or store them as text) and upload the "
        "file again."
    )


def too_wide_message(subject: str, limit: int) -> str:
    return (
        f"{subject} has rows with more than {limit} keys (each becomes a column); Quarry "
        f"accepts at most {limit} columns (MAX_DATASET_COLUMNS)."
    )


class _Scanner:
    """Feed it the text in pieces; it raises TooDeep as soon as a value nests deeper than
    `limit`. With `lines`, every line is a document of its own (JSON Lines): strings and
    depth start again after each newline, and a line with more than `max_keys` keys (at
    any depth: nested objects become columns too) raises TooWide."""

    def __init__(self, limit: int, lines: bool, max_keys: int | None) -> None:
        import numpy as np

        self.np = np
        self.limit = limit
        self.lines = lines
        self.max_keys = max_keys if lines else None
        self.depth = 0  # where the last piece left off
        self.inside = 0  # 1: inside a string
        self.keys = 0  # keys so far in the line the last piece left open
        self.held = b""  # a backslash whose escaped character is in the next piece
        self.step = np.zeros(256, dtype=np.int8)
        self.step[list(b"[{")] = 1
        self.step[list(b"]}")] = -1

    def feed(self, data: bytes) -> None:
        data = self.held + data
        # A run of backslashes at the end of odd length escapes the next piece's first byte.
        run = len(data) - len(data.rstrip(b"\\"))
        self.held = b"\\" if run % 2 else b""
        if self.held:
            data = data[:-1]
        # Escapes go first (left to right, as a lexer reads them: `\\` then `\"`), then
        # every byte that is not a quote, a bracket, a colon or (JSON Lines) a newline.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        data = data.translate(None, _DELETE if self.lines else _DELETE + b"\n:")
        if data:
            self._count(data)

    def _count(self, data: bytes) -> None:
        np = self.np
        chars = np.frombuffer(data, dtype=np.uint8)
        quotes = chars == _QUOTE
        quoted = np.cumsum(quotes, dtype=np.int64)
        inside = (quoted + self.inside) & 1
        steps = np.where(inside | quotes, 0, self.step[chars])
        depth = np.cumsum(steps, dtype=np.int64) + self.depth
        starts = np.flatnonzero(chars == _NEWLINE) if self.lines else None
        if starts is not None and starts.size and (depth[starts].any() or inside[starts].any()):
            # A line that did not end where it began (invalid JSON): every line is counted
            # from nothing again, as a JSON Lines reader reads it.
            line = np.cumsum(chars == _NEWLINE)
            first = line == 0
            quoted = quoted - np.concatenate(([0], quoted[starts]))[line]
            inside = (quoted + np.where(first, self.inside, 0)) & 1
            steps = np.where(inside | quotes, 0, self.step[chars])
            stepped = np.cumsum(steps, dtype=np.int64)
            stepped = stepped - np.concatenate(([0], stepped[starts]))[line]
            depth = stepped + np.where(first, self.depth, 0)
        if int(depth.max()) > self.limit:
            raise TooDeep(self.limit)
        if starts is not None and self.max_keys is not None:
            keyed = np.cumsum((chars == _COLON) & (inside == 0), dtype=np.int64) + self.keys
            ends = keyed[starts]
            per_line = np.diff(np.concatenate(([0], ends, keyed[-1:])))
            if int(per_line.max()) > self.max_keys:
                raise TooWide(self.max_keys)
            self.keys = int(keyed[-1] - (ends[-1] if ends.size else 0))
        self.depth = max(0, int(depth[-1]))
        self.inside = int(inside[-1])


def check_json(
    pieces: Iterable[bytes],
    *,
    lines: bool,
    limit: int = MAX_JSON_DEPTH,
    max_keys: int | None = None,
) -> None:
    """Raise TooDeep if the JSON text (UTF-8, or any ASCII-compatible encoding) in `pieces`
    nests deeper than `limit`; with `lines` and `max_keys`, TooWide if a line holds more
    keys than that. Says nothing about whether the text is valid JSON."""
    scanner = _Scanner(limit, lines, max_keys)
    for piece in pieces:
        scanner.feed(piece)


def file_pieces(path: Any, encoding: str = "utf-8") -> Iterable[bytes]:
    """A text file's bytes in pieces the scanner can read: as they are in UTF-8 and in
    single-byte encodings that extend ASCII; re-encoded as UTF-8 from any other (in UTF-16
    or Shift JIS, a byte that reads as "[" may be half of another character)."""
    name = codecs.lookup(encoding).name
    if name in {"utf-8", "utf-8-sig", "ascii"} or name.startswith(_SINGLE_BYTE):
        with open(path, "rb") as fh:
            while piece := fh.read(CHUNK_BYTES):
                yield piece
        return
    with open(path, encoding=encoding, errors="replace") as text:
        while chars := text.read(CHUNK_BYTES // 4):
            yield chars.encode("utf-8", "surrogatepass")


_SINGLE_BYTE = ("iso8859", "cp125", "latin", "koi8", "mac-", "cp437", "cp850")
