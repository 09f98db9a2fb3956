"""What the request-side inspection and the out-of-process converter share.

Kept free of web-framework imports: the converter runs in a fresh process that parses
untrusted files and should start quickly and hold nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from api.ingest.nesting import too_wide_message


class TableError(ValueError):
    """The content is readable but holds no usable table; the message says why."""


@dataclass
class SourceTable:
    """One table found in an upload: what the converter needs to turn it into Parquet."""

    name: str
    format: str  # csv | tsv | json | jsonl | xlsx | xls | parquet
    path: str
    size: int
    sha256: str
    archive_member: str | None = None
    sheet_name: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    columns: list[str] | None = None
    newlines_in_values: bool = False
    skip_rows: int = 1  # lines before the first data row (a title line, the header)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def records_of(document: Any, filename: str) -> list[dict[str, Any]]:
    """The rows of a JSON document: an array of objects, an object of equal-length arrays
    (columns), or an object with one array of objects inside (`{"data": [...]}`)."""
    if isinstance(document, list):
        if document and all(isinstance(row, dict) for row in document):
            return document
        if not document:
            raise TableError(f"'{filename}' is an empty JSON array.")
        raise TableError(f"'{filename}' must be an array of objects (one object per row).")
    if isinstance(document, dict):
        arrays = {k: v for k, v in document.items() if isinstance(v, list)}
        if arrays and len(arrays) == len(document):
            if len(arrays) == 1:
                (only,) = arrays.values()
                if only and all(isinstance(row, dict) for row in only):
                    return only
            lengths = {len(v) for v in arrays.values()}
            if len(lengths) == 1 and lengths != {0}:
                (n,) = lengths
                return [{k: v[i] for k, v in arrays.items()} for i in range(n)]
    raise TableError(
        f"'{filename}' has no table in it: expected an array of objects, an object of "
        "equal-length arrays, or JSON Lines."
    )


def check_width(rows: list[dict[str, Any]], max_columns: int, subject: str) -> None:
    """Raise TableError when the rows would make more than `max_columns` columns (nested
    objects become `parent.child` columns), before pandas builds them: a million keys in one
    object took it minutes and all its memory, and the user read "out of memory"."""
    columns: set[str] = set()
    for row in rows:
        if len(row) > max_columns:
            break
        if any(isinstance(value, dict) for value in row.values()):
            stack: list[tuple[str, dict[str, Any]]] = [("", row)]
            while stack and len(columns) <= max_columns:
                prefix, level = stack.pop()
                for key, value in level.items():
                    if isinstance(value, dict) and value:
                        stack.append((f"{prefix}{key}.", value))
                    else:
                        columns.add(f"{prefix}{key}")
        else:
            columns.update(row)
        if len(columns) > max_columns:
            break
    else:
        return
    raise TableError(too_wide_message(subject, max_columns))


def clean_column_names(raw: list[Any]) -> list[str]:
    """Column names a DataFrame can hold (and PostgreSQL can store in a profile): trimmed
    strings without NUL characters, none empty, no duplicates."""
    names: list[str] = []
    seen: set[str] = set()
    for index, value in enumerate(raw):
        name = str(value).replace("\x00", "").strip()[:255] if value is not None else ""
        base = name or f"column_{index + 1}"
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            candidate = f"{base}_{n}"
        seen.add(candidate)
        names.append(candidate)
    return names
