"""A session's tables as questions see them: column names, what kind of values each holds
(numbers, dates, text, yes/no, a saved row number) and, for text columns, values a question
may name ("Japan" is a value of `Origin`); built from the datasets' schemas and profiles.

Used by the worker's offline model (worker/agent/nlq/) and by the API for the questions it
suggests in an empty chat (`suggestions`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NUMBER, DATE, TEXT, BOOL = "number", "date", "text", "bool"
INDEX = "index"  # a row number saved with the data ("Unnamed: 0"): never a measure

# Text that reads as a date: ISO (2012-01-01, 2012/01/01, with a time), "Jan 1 2000",
# "1 January 2000", 01/31/2000 or 31/01/2000.
_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m",
    "%b %d %Y",
    "%B %d %Y",
    "%d %b %Y",
    "%d %B %Y",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
)


def looks_like_date(text: str) -> bool:
    text = text.strip().replace(",", "")
    if not text or len(text) > 32 or not any(ch.isdigit() for ch in text):
        return False
    for fmt in _DATE_FORMATS:
        try:
            datetime.strptime(text[:19] if "T" in text or ":" in text else text, fmt)
        except ValueError:
            continue
        return True
    return False


def kind_of(dtype: str, profile: dict[str, Any] | None = None) -> str:
    low = dtype.lower()
    if "bool" in low:
        return BOOL
    if any(t in low for t in ("date", "time")):
        return DATE
    if any(t in low for t in ("int", "float", "double", "decimal")):
        return NUMBER
    if profile:
        samples = [str(v["value"]) for v in profile.get("top_values", []) if "value" in v]
        samples += [str(profile[k]) for k in ("min", "max") if isinstance(profile.get(k), str)]
        if samples and all(looks_like_date(s) for s in samples):
            return DATE  # dates kept as text: parsed when used
    return TEXT


@dataclass
class Column:
    name: str
    dtype: str
    kind: str
    values: list[str] = field(default_factory=list)  # known values of a text column
    distinct: int | None = None
    stored_as_text: bool = False  # a DATE column whose values are strings
    minimum: float | None = None  # a NUMBER column's range
    maximum: float | None = None

    @property
    def words(self) -> str:
        """The name as words: `temp_max` -> "temp max", `petalLength` -> "petal length"."""
        spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", self.name)
        return re.sub(r"[_\W]+", " ", spaced).strip().lower()


@dataclass
class Table:
    variable: str
    name: str
    rows: int | None
    columns: list[Column]
    # the code that makes `data` when it is not the dataset itself (two datasets joined)
    source: tuple[str, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def of_kind(self, kind: str) -> list[Column]:
        return [c for c in self.columns if c.kind == kind]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def tables(
    schemas: Iterable[dict[str, Any]], profiles: dict[str, dict[str, Any]] | None = None
) -> list[Table]:
    """Tables from the prompt's schemas, with each dataset's profile (by variable) where
    the worker passed one."""
    out = []
    for schema in schemas:
        variable = str(schema.get("variable", "df"))
        profile = (profiles or {}).get(variable) or {}
        by_name = {str(c.get("name")): c for c in profile.get("columns", [])}
        columns = []
        for name, dtype in (schema.get("columns") or {}).items():
            info = by_name.get(str(name), {})
            kind = INDEX if info.get("index") else kind_of(str(dtype), info)
            kept = info.get("values")
            values = (
                [str(v) for v in kept if v is not None]
                if isinstance(kept, list)
                else [
                    str(v["value"])
                    for v in info.get("top_values") or []
                    if isinstance(v, dict) and v.get("value") is not None
                ]
            )
            columns.append(
                Column(
                    name=str(name),
                    dtype=str(dtype),
                    kind=kind,
                    values=values if kind in (TEXT, BOOL) else [],
                    distinct=info.get("distinct"),
                    stored_as_text=kind == DATE and kind_of(str(dtype)) != DATE,
                    minimum=_number(info.get("min")) if kind == NUMBER else None,
                    maximum=_number(info.get("max")) if kind == NUMBER else None,
                )
            )
        out.append(
            Table(
                variable=variable,
                name=str(schema.get("name", variable)),
                rows=schema.get("rows"),
                columns=columns,
            )
        )
    return out


def suggestions(tables: list[Table], limit: int = 6) -> list[str]:
    """Questions the offline model answers (and an LLM too), built from the session's first
    dataset: what an empty chat offers, and what a question it did not understand gets."""
    if not tables:
        return []
    t = tables[0]
    others = tables[1:]

    def name(column: Column) -> str:
        """A column another dataset of the session also has is named with its dataset."""
        shared = any(o.column(column.name) is not None for o in others)
        return f"{column.name} of {t.name}" if shared else column.name

    numbers = [c for c in t.columns if c.kind == NUMBER and c.words not in ("id", "index")]
    texts = [c for c in t.columns if c.kind == TEXT and (c.distinct or 0) <= 50 and c.values]
    dates = t.of_kind(DATE)
    out = [f"How many rows does {t.name.rsplit('.', 1)[0]} have?"]
    if numbers and texts:
        out.append(f"Average {name(numbers[0])} by {name(texts[0])}")
        out.append(f"Which {name(texts[0])} has the highest average {name(numbers[0])}?")
    if texts:
        out.append(f"How many rows per {name(texts[0])}?")
    if dates and numbers:
        out.append(f"Average {name(numbers[0])} by month")
    if numbers:
        out.append(f"Distribution of {name(numbers[0])}")
    if len(numbers) >= 2:
        out.append(f"Correlation between {name(numbers[0])} and {name(numbers[1])}")
    if not others:
        out.append("Which columns have missing values?")
    return list(dict.fromkeys(out))[:limit]
