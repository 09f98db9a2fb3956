"""The typed plan a question becomes, and how it reads in plain words.

A `Query` says what to compute (`intent`), on which table, of which column (`measure`,
aggregated by `agg`), split by which columns (`group_by`, or a time `grain` of a date
column), on which rows (`filters`), ranked how (`rank`), drawn how (`chart`). It is kept
with the answer (as JSON) so that a follow-up ("now only for 2012", "and the median?") can
change it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# intents
AGGREGATE = "aggregate"  # one number, or one per group
COUNT = "count"  # rows, or rows per group
SHAPE = "shape"
COLUMNS = "columns"
MISSING = "missing"
DISTRIBUTION = "distribution"
CORRELATION = "correlation"
TREND = "trend"  # a measure (or the row count) per period of a date column
SHARE = "share"  # each group's share of a total
COMPARE = "compare"  # a measure for two or more named groups
SCATTER = "scatter"  # one numeric column against another
ROWS = "rows"  # the rows with the highest/lowest value of a column
DESCRIBE = "describe"
DISTINCT = "distinct"  # the values of a column
MODEL = "model"  # a quick model of `measure` from the `group_by` columns, scored held out
LOOKUP = "lookup"  # the values of `measure` on the rows asked for (one per group if grouped)

AGG_WORDS = {
    "mean": "average",
    "sum": "total",
    "median": "median",
    "min": "minimum",
    "max": "maximum",
    "std": "standard deviation",
    "count": "number of rows",
    "nunique": "number of distinct values",
}
GRAIN_WORDS = {"year": "year", "quarter": "quarter", "month": "month", "week": "week", "day": "day"}
OP_WORDS = {
    "==": "is",
    "!=": "is not",
    ">": "is more than",
    ">=": "is at least",
    "<": "is less than",
    "<=": "is at most",
    "in": "is one of",
    "year": "is in",
    "year_between": "is in the years",
    "year>=": "is in or after",
    "year>": "is after",
    "year<": "is before",
    "year<=": "is in or before",
    "date": "is on",
    "month": "is in",
    "contains": "contains",
}
MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]


@dataclass
class Filter:
    column: str
    op: str  # a key of OP_WORDS
    value: Any

    def words(self) -> str:
        if self.op == "year_between":
            low, high = self.value
            return f"{self.column} is in the years {low} to {high}"
        if self.op == "month":
            return f"{self.column} is in {MONTHS[int(self.value) - 1].capitalize()}"
        if self.op == "in":
            return f"{self.column} is one of {', '.join(map(str, self.value))}"
        return f"{self.column} {OP_WORDS[self.op]} {self.value}"


@dataclass
class Query:
    intent: str
    table: str  # the dataset's variable
    measure: str | None = None
    agg: str | None = None
    group_by: list[str] = field(default_factory=list)
    date: str | None = None  # the date column of a trend or a time filter
    grain: str | None = None
    filters: list[Filter] = field(default_factory=list)
    rank: tuple[str, int] | None = None  # ("desc" | "asc", n)
    chart: str | None = None
    other: str | None = None  # a second numeric column (correlation, scatter)
    groups: list[str] = field(default_factory=list)  # the named groups of a comparison
    # two datasets joined: {"table": the second's variable, "on": the key, "left"/"right":
    # the datasets' names}; `table` is the first (see worker/agent/nlq/join.py)
    join: dict[str, Any] | None = None
    dataset: str | None = None  # named in the plan when the session has several

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["filters"] = [asdict(f) for f in self.filters]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Query:
        data = dict(data)
        data["filters"] = [Filter(**f) for f in data.get("filters", [])]
        if data.get("rank") is not None:
            data["rank"] = (str(data["rank"][0]), int(data["rank"][1]))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def words(self) -> str:
        """The plan in plain words: "average temp_max by weather, for rows where date is
        in 2012"."""
        what = self._what()
        if self.dataset and not self.join:
            what += f", in {self.dataset}"
        if self.join:
            join = self.join
            what += f", over {join['left']} joined with {join['right']} on {join['on']}"
        if self.filters:
            what += ", for rows where " + " and ".join(f.words() for f in self.filters)
        return what

    def _what(self) -> str:
        agg = AGG_WORDS.get(self.agg or "", self.agg or "")
        by = f" by {', '.join(self.group_by)}" if self.group_by else ""
        if self.intent == SHAPE:
            return f"the number of rows and columns of {self.table}"
        if self.intent == COLUMNS:
            return f"the columns of {self.table} and their types"
        if self.intent == MISSING:
            return f"missing values per column of {self.table}"
        if self.intent == DESCRIBE:
            return f"an overview of {self.table}"
        if self.intent == DISTINCT:
            return f"the distinct values of {self.measure}"
        if self.intent == DISTRIBUTION:
            return f"the distribution of {self.measure}{by}"
        if self.intent == LOOKUP:
            return f"{self.measure}{' for each ' + self.group_by[0] if self.group_by else ''}"
        if self.intent == MODEL:
            return f"a quick model predicting {self.measure} from {', '.join(self.group_by)}"
        if self.intent == CORRELATION:
            if self.measure and self.other:
                return f"the correlation between {self.measure} and {self.other}"
            return "the correlation matrix of the numeric columns"
        if self.intent == SCATTER:
            return f"{self.measure} against {self.other}"
        if self.intent == COUNT:
            if self.rank is not None and self.group_by:
                order, n = self.rank
                common = "most common" if order == "desc" else "least common"
                if n == 1:
                    return f"the {common} {self.group_by[0]}"
                return f"the {n} {common} values of {self.group_by[0]}"
            if self.groups:
                return f"the number of rows for {' vs '.join(self.groups)} ({self.group_by[0]})"
            return f"the number of rows{by}" if by else "the number of rows"
        if self.intent == TREND:
            value = f"{agg} {self.measure}" if self.measure else "number of rows"
            if self.rank is not None:
                order, n = self.rank
                most = "highest" if order == "desc" else "lowest"
                if n == 1:
                    return f"the {self.grain} ({self.date}) with the {most} {value}"
                return f"the {n} {self.grain}s ({self.date}) with the {most} {value}"
            return f"{value} per {self.grain} ({self.date}){by}"
        if self.intent == SHARE:
            value = f"{agg} {self.measure}" if self.measure else "rows"
            return f"each {', '.join(self.group_by)}'s share of {value}"
        if self.intent == COMPARE:
            return f"{agg} {self.measure} for {' vs '.join(self.groups)} ({self.group_by[0]})"
        if self.intent == ROWS:
            order, n = self.rank or ("desc", 5)
            most = "highest" if order == "desc" else "lowest"
            return f"the {n} rows with the {most} {self.measure}"
        value = f"{agg} {self.measure}" if self.measure else agg
        if self.rank is not None:
            order, n = self.rank
            most = "highest" if order == "desc" else "lowest"
            if n == 1:
                return f"the {self.group_by[0]} with the {most} {value}"
            return f"the {n} {self.group_by[0]} with the {most} {value}"
        return f"{value}{by}"
