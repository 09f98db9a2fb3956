"""What a question's spans say before an intent is chosen (`Reading`), and which dataset
they are about: the one named or pointed at, or two joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.agent.nlq import join
from worker.agent.nlq import query as q
from worker.agent.nlq.lexicon import Span
from worker.agent.nlq.schema import DATE, NUMBER, Column, Table

# --- assembly --------------------------------------------------------------------------------


@dataclass
class Reading:
    """What the spans say, before an intent is chosen."""

    table: Table
    markers: set[str] = field(default_factory=set)
    measures: list[Column] = field(default_factory=list)  # columns not used otherwise
    group_by: list[Column] = field(default_factory=list)
    filters: list[q.Filter] = field(default_factory=list)
    values: list[tuple[Column, str]] = field(default_factory=list)  # named values
    aggs: list[str] = field(default_factory=list)
    direction: str | None = None  # "desc" (highest) or "asc" (lowest)
    n: int | None = None
    grain: str | None = None
    chart: str | None = None
    which: Column | None = None  # "which weather ..."
    which_grain: str | None = None  # "which year ...": a period of the date column
    counted: Column | None = None  # "how many species": the column right after "how many"
    per_group: bool = False  # the group came with "by", "per", "for each"
    date: Column | None = None
    join: dict[str, Any] | None = None  # two datasets joined (see `join.spec`)
    mentioned: list[str] = field(default_factory=list)  # the columns the question names


def within(column: Column, low: float, high: float) -> bool:
    """Whether a range could be about this numeric column's values."""
    if column.minimum is None or column.maximum is None:
        return True
    return column.minimum <= high and low <= column.maximum


def date_column(table: Table, mentioned: list[Column]) -> Column | None:
    dates = [c for c in mentioned if c.kind == DATE] or table.of_kind(DATE)
    if len(dates) == 1:
        return dates[0]
    named = [c for c in dates if c.words in ("date", "day", "time", "timestamp")]
    return named[0] if len(named) == 1 else None


def year_column(table: Table, mentioned: list[Column]) -> tuple[Column, bool] | None:
    """Where a year filters: a date column (its year), else a numeric column named year."""
    date = date_column(table, mentioned)
    if date is not None:
        return date, True
    years = [c for c in table.columns if c.kind == NUMBER and c.words in ("year", "yr")]
    return (years[0], False) if years else None


class Unplaced(Exception):
    def __init__(self, words: list[str], reason: str = "") -> None:
        super().__init__(reason)
        self.words, self.reason = words, reason


def words_of(words: list[str], span: Span) -> str:
    return " ".join(words[span.start : span.end])


def _owners(span: Span, tables: list[Table]) -> list[Table]:
    """The tables that have a column of this span's name (or this value)."""
    if span.kind == "column":
        name = span.payload[1].name
        return [t for t in tables if t.column(name) is not None]
    _, column, value = span.payload
    return [t for t in tables if (c := t.column(column.name)) is not None and value in c.values]


def which_table(
    words: list[str], spans: list[Span], tables: list[Table]
) -> tuple[Table, list[Span], dict[str, Any] | None]:
    """The dataset a question is about: the one it names, else the one its columns and
    values belong to; a column several datasets have, with nothing else to tell, is asked
    about. The session's first dataset when nothing points anywhere. Two datasets named
    or pointed at (or "join"/"combine" in a session of two) are joined (see `join`)."""
    candidates: dict[int, Table] = {id(s.payload): s.payload for s in spans if s.kind == "table"}
    pointed = [(s, _owners(s, tables)) for s in spans if s.kind in ("column", "value")]
    for _, owners in pointed:
        if len(owners) == 1:  # only one dataset has it
            candidates[id(owners[0])] = owners[0]
    if any(s.kind == "word" and s.payload == "join" for s in spans):
        if len(tables) < 2:
            raise Unplaced([], "this session has one dataset: attach another one to join them")
        if len(candidates) < 2 and len(tables) == 2:
            candidates = {id(t): t for t in tables}
    if len(candidates) > 2:
        raise Unplaced(
            [t.name for t in candidates.values()],
            "it names more than two datasets, and I join two at a time",
        )
    if len(candidates) == 2:
        a, b = sorted(candidates.values(), key=tables.index)
        return _joined(words, spans, a, b)
    if candidates:
        table = next(iter(candidates.values()))
        for span, owners in pointed:
            if table not in owners:
                raise Unplaced(
                    [words_of(words, span)], f"it is not a column or value of {table.name}"
                )
        return table, spans, None
    shared = [(s, owners) for s, owners in pointed if len(owners) > 1]
    if shared:
        span, owners = shared[0]
        names = [t.name for t in owners]
        both = " and ".join(names) if len(names) == 2 else ", ".join(names)
        raise Unplaced(
            [words_of(words, span)],
            f"{both} {'both' if len(names) == 2 else 'all'} have it: name the dataset, e.g. "
            f"“{words_of(words, span)} of {names[-1]}”",
        )
    return tables[0], spans, None


def _side(
    words: list[str], spans: list[Span], i: int, sides: tuple[Table, Table]
) -> tuple[Table, set[int]] | None:
    """The dataset a column at `i` is qualified by, and the spans saying it: "sf-temps temp",
    "sf-temps's temp", "temp of/in/from sf-temps"."""

    def table_at(j: int) -> Table | None:
        if 0 <= j < len(spans) and spans[j].kind == "table" and spans[j].payload in sides:
            return spans[j].payload  # type: ignore[no-any-return]
        return None

    if (found := table_at(i - 1)) is not None:
        return found, {i - 1}
    if i >= 2 and words[spans[i - 1].start] == "'s" and (found := table_at(i - 2)) is not None:
        return found, {i - 2, i - 1}
    after = spans[i + 1] if i + 1 < len(spans) else None
    of = after is not None and after.kind == "word" and after.payload in ("of", "filter", "from")
    if of and (found := table_at(i + 2)) is not None:
        return found, {i + 1, i + 2}
    return None


def _joined(
    words: list[str], spans: list[Span], a: Table, b: Table
) -> tuple[Table, list[Span], dict[str, Any]]:
    """The two datasets joined, and the question's spans placed in the joined table: a
    column both have is the one its dataset qualifies (that qualifier's words are used)."""
    named = [s.payload[1].name for s in spans if s.kind == "column"]
    qualified = {
        s.payload[1].name
        for i, s in enumerate(spans)
        if s.kind == "column" and _side(words, spans, i, (a, b)) is not None
    }
    on = [
        s.payload[1].name
        for s in spans
        if s.kind == "column" and s.start > 0 and words[s.start - 1] in ("on", "using")
    ]
    try:
        key = join.pick_key(a, b, named, qualified, on)
    except join.JoinError as exc:
        raise Unplaced([], str(exc)) from None
    table = join.joined(a, b, key)
    used: set[int] = set()
    placed: dict[int, Span] = {}
    for i, span in enumerate(spans):
        if span.kind not in ("column", "value"):
            continue
        name = span.payload[1].name
        if name == key and span.start > 0 and words[span.start - 1] in ("on", "using"):
            used.add(i)  # "join ... on date": said once, as the key
            continue
        column = table.column(name)
        if column is None:  # both have it: whose?
            owners = [t for t in (a, b) if t in _owners(span, [a, b])]
            qualifier = _side(words, spans, i, (a, b))
            if qualifier is not None and qualifier[0] in owners:
                owners = [qualifier[0]]
                used |= qualifier[1]
            if len(owners) != 1:
                raise Unplaced(
                    [words_of(words, span)],
                    f"{a.name} and {b.name} both have it: say which, e.g. “{name} of {b.name}”",
                )
            column = table.column(join.qualified(name, owners[0]))
        payload = (table, column) if span.kind == "column" else (table, column, span.payload[2])
        placed[i] = Span(span.start, span.end, span.kind, payload)
    out = [placed.get(i, span) for i, span in enumerate(spans) if i not in used]
    return table, out, join.spec(a, b, key)
