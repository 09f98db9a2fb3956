"""Is an answer right? Read the reply as a user would: the value it states, the rows of the
table it shows.

- a number: the value stated (bold first, else any number in the reply) equals the truth
  (to 0.1 %, or 0.001; counts exactly);
- a label: it is the value stated (bold), or named in the reply;
- a table (dict): every row the reply shows is right, and it shows the truth's rows (all of
  them, or the 15 a summary holds when the table is longer);
- a set of labels, a tuple of numbers: each one appears;
- `None` (an ambiguous or unreachable question): any answer is wrong; asking back or saying
  so is right.

`answered` tells a reply that answers from one that says it could not or asks back.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
NOT_ANSWERED = (
    "I did not understand",
    "I need one more detail",
    "I could not",
    "This session has no dataset",
)
SUMMARY_ROWS = 15


def answered(text: str) -> bool:
    text = text.strip()
    return bool(text) and not text.startswith(NOT_ANSWERED) and ": I could not compute" not in text


def _numbers(text: str) -> list[float]:
    found = []
    for match in _NUMBER.findall(text):
        try:
            found.append(float(match.replace(",", "")))
        except ValueError:
            continue
    return found


def close(value: float, truth: float) -> bool:
    if isinstance(truth, bool):
        truth = float(truth)
    if math.isnan(truth):
        return math.isnan(value)
    return abs(value - truth) <= max(1e-3 * abs(truth), 1e-3)


def _cell_key(cell: str) -> str:
    cell = cell.strip().strip("*").strip()
    try:
        number = float(cell)
    except ValueError:
        return cell.lower()
    return str(int(number)) if number.is_integer() else str(number)


def _rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in `text` (a header row is the one before a
    `|---|` line)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        if set(line) <= {"|", "-", " ", ":"}:
            if rows:
                rows.pop()  # the header
            continue
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def correct(truth: Any, text: str) -> bool:
    if truth is None:
        return False
    bold = _BOLD.findall(text)
    if isinstance(truth, str):
        if bold:
            return bold[0].strip().strip("'\"").lower() == truth.lower()
        return re.search(rf"(?<!\w){re.escape(truth)}(?!\w)", text, re.I) is not None
    if isinstance(truth, numbers.Real) and not isinstance(truth, bool):
        stated = _numbers(bold[0]) if bold else []
        candidates = stated or _numbers(text)
        return any(close(v, float(truth)) for v in candidates[:1] if stated) or (
            not stated and any(close(v, float(truth)) for v in candidates)
        )
    if isinstance(truth, set):
        return all(re.search(rf"(?<!\w){re.escape(str(t))}(?!\w)", text, re.I) for t in truth)
    if isinstance(truth, tuple):
        found = _numbers(text)
        return all(any(close(v, float(t)) for v in found) for t in truth)
    if isinstance(truth, dict):
        want = {_cell_key(str(k)): float(v) for k, v in truth.items()}
        shown: dict[str, list[float]] = {}
        for row in _rows(text):
            if not row:
                continue
            key = _cell_key(row[0])
            values = [n for cell in row[1:] for n in _numbers(cell)]
            shown[key] = values
        matched = [k for k in want if k in shown]
        if len(want) <= SUMMARY_ROWS and any(k not in want for k in shown):
            return False  # a row that should not be there
        needed = min(len(want), SUMMARY_ROWS)
        if len(matched) < needed:
            return False
        return all(any(close(v, want[k]) for v in shown[k]) for k in matched)
    return False
