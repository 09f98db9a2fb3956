"""Dates written as text (`2012/01/01`, `Jan 1 2000`, `31/01/2000`): which text columns
hold dates, and in which format, decided from the data.

A column is a date column when every non-empty value of the sample parses with one format
of `FORMATS`; ISO dates Arrow recognises by itself. Day-first or month-first is decided by
the values: a first field over 12 means day-first, a second field over 12 month-first; when
neither shows (every value reads both ways) the column stays text and the profile says why.
The converter then reads the whole column with that format, and a later value that does not
parse keeps it as text (`convert.py` widens it): a column is never half dates.
"""

from __future__ import annotations

from datetime import datetime

# (format, whether it has a time of day); ISO-8601 with "-" is Arrow's own
FORMATS: tuple[str, ...] = (
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%b %d %Y",
    "%B %d %Y",
    "%d %b %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d-%b-%Y",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M",
    "%m-%d-%Y",
    "%d-%m-%Y",
    "%d.%m.%Y",
    "%m.%d.%Y",
)
# formats that read the same digits two ways: (month-first, day-first)
_ORDERS = (
    ("%m/%d/%Y", "%d/%m/%Y"),
    ("%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M"),
    ("%m-%d-%Y", "%d-%m-%Y"),
    ("%m.%d.%Y", "%d.%m.%Y"),
)
AMBIGUOUS = "ambiguous"
_SAMPLE = 200


def _parses(fmt: str, values: list[str]) -> bool:
    for value in values:
        try:
            datetime.strptime(value, fmt)
        except ValueError:
            return False
    return True


def detect(values: list[str]) -> str | None:
    """The format every value parses with, `AMBIGUOUS` when the values read both day-first
    and month-first, or None."""
    sample = [v.strip() for v in values if v and v.strip()][:_SAMPLE]
    if len(sample) < 2 or not all(any(ch.isdigit() for ch in v) for v in sample):
        return None
    found = [fmt for fmt in FORMATS if _parses(fmt, sample)]
    if not found:
        return None
    for month_first, day_first in _ORDERS:
        if month_first in found and day_first in found:
            return AMBIGUOUS
    return found[0]


def columns(names: list[str], rows: list[list[str]]) -> dict[str, str]:
    """Column -> format (or `AMBIGUOUS`) for the text columns of sample rows."""
    out = {}
    for index, name in enumerate(names):
        values = [row[index] for row in rows if index < len(row)]
        found = detect(values)
        if found is not None:
            out[name] = found
    return out


def read_note(column: str, fmt: str) -> str:
    example = datetime(2012, 1, 31, 14, 5).strftime(fmt)
    return f"Column {column!r} holds dates written as text (like {example!r}): stored as dates."


def ambiguous_note(column: str) -> str:
    return (
        f"Column {column!r} looks like dates, but every value reads both day-first and "
        "month-first (no day over 12): kept as text."
    )
