"""Question -> `Query`, precision first.

Every word of the question must be accounted for: a column, a value of a column, a
dataset, a number, a year or month, one of the words the grammar knows (aggregates,
"by"/"per", comparisons, rankings, intents, chart kinds) or a word that carries no meaning
here ("the", "show", "please"). A word that is none of these is not guessed at: the
question is not answered, the reply names the words it did not understand, offers "did
you mean" for columns and values spelt closely, and suggests plans it can run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from api.profiles import suggestions
from worker.agent.nlq import join
from worker.agent.nlq import query as q
from worker.agent.nlq.schema import BOOL, DATE, NUMBER, TEXT, Column, Table

# --- the vocabulary --------------------------------------------------------------------------

AGGS = {
    "average": "mean",
    "mean": "mean",
    "avg": "mean",
    "median": "median",
    "sum": "sum",
    "total": "sum",
    "minimum": "min",
    "min": "min",
    "maximum": "max",
    "max": "max",
    "std": "std",
    "stdev": "std",
    "deviation": "std",
}
MOST = {"highest", "largest", "biggest", "most", "greatest", "best", "top", "max", "maximum"}
LEAST = {"lowest", "smallest", "least", "fewest", "worst", "bottom", "min", "minimum"}
GROUP_MARKERS = {"by", "per", "each", "across", "every"}
GRAINS = {
    "year": "year",
    "years": "year",
    "yearly": "year",
    "annual": "year",
    "annually": "year",
    "quarter": "quarter",
    "quarters": "quarter",
    "quarterly": "quarter",
    "month": "month",
    "months": "month",
    "monthly": "month",
    "week": "week",
    "weeks": "week",
    "weekly": "week",
    "day": "day",
    "days": "day",
    "daily": "day",
}
CHARTS = {
    "line": "line",
    "bar": "bar",
    "bars": "bar",
    "pie": "pie",
    "scatter": "scatter",
    "histogram": "histogram",
    "box": "box",
}
COMPARATORS = {
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "=": "==",
    "==": "==",
    "!=": "!=",
    "greater than": ">",
    "more than": ">",
    "higher than": ">",
    "larger than": ">",
    "bigger than": ">",
    "over": ">",
    "above": ">",
    "exceeds": ">",
    "at least": ">=",
    "no less than": ">=",
    "less than": "<",
    "lower than": "<",
    "smaller than": "<",
    "fewer than": "<",
    "under": "<",
    "below": "<",
    "at most": "<=",
    "no more than": "<=",
    "equal to": "==",
    "equals": "==",
    "not": "!=",
}
# phrases (longest first when matched) -> a marker the assembly reads
PHRASES = {
    "how many": "count",
    "number of": "count",
    "count of": "count",
    "count": "count",
    "counts": "count",
    "frequency": "count",
    "frequencies": "count",
    "breakdown": "count",
    "missing": "missing",
    "missing values": "missing",
    "null": "missing",
    "nulls": "missing",
    "nan": "missing",
    "empty values": "missing",
    "blank": "missing",
    "distribution": "distribution",
    "distributed": "distribution",
    "histogram": "distribution",
    "spread": "distribution",
    "correlation": "correlation",
    "correlation matrix": "correlation",
    "heatmap": "correlation",
    "correlations": "correlation",
    "correlated": "correlation",
    "correlate": "correlation",
    "corr": "correlation",
    "relationship": "correlation",
    "trend": "trend",
    "trends": "trend",
    "over time": "trend",
    "evolution": "trend",
    "time series": "trend",
    "share": "share",
    "percentage": "share",
    "percent": "share",
    "proportion": "share",
    "fraction": "share",
    "compare": "compare",
    "comparison": "compare",
    "versus": "versus",
    "vs": "versus",
    "against": "versus",
    "columns": "columns",
    "column": "columns",
    "fields": "columns",
    "schema": "columns",
    "types": "columns",
    "dtypes": "columns",
    "column types": "columns",
    "data types": "columns",
    "shape": "shape",
    "size": "shape",
    "dimensions": "shape",
    "how big": "shape",
    "rows and columns": "shape",
    "describe": "describe",
    "overview": "describe",
    "summary": "describe",
    "summarize": "describe",
    "summarise": "describe",
    "statistics": "describe",
    "stats": "describe",
    "distinct": "distinct",
    "unique": "distinct",
    "different": "distinct",
    "common": "frequent",
    "frequent": "frequent",
    "often": "frequent",
    "popular": "frequent",
    "between": "between",
    "from": "from",
    "to": "to",
    "and": "and",
    "since": "since",
    "after": "since",
    "before": "before",
    "until": "until",
    "instead": "instead",
    "what about": "now",
    "how about": "now",
    "predict": "model",
    "prediction": "model",
    "predictions": "model",
    "regression": "model",
    "classify": "model",
    "classification": "model",
    "model": "model",
    "now": "now",
    "only": "filter",
    "where": "filter",
    "with": "filter",
    "for": "filter",
    "in": "filter",
    "of": "of",
    "whose": "filter",
    "when": "filter",
    "during": "filter",
    "which": "which",
    "what": "which",
    "who": "which",
    "chart": "chart",
    "plot": "chart",
    "graph": "chart",
    "as a": "as",
    "as": "as",
    "rows": "rows",
    "row": "rows",
    "times": "rows",
    "records": "rows",
    "entries": "rows",
    "observations": "rows",
    "over": "over",
    "join": "join",
    "joined": "join",
    "joining": "join",
    "merge": "join",
    "merged": "join",
    "merging": "join",
    "combine": "join",
    "combined": "join",
    "combining": "join",
    "together": "join",
    "both datasets": "join",
    "two datasets": "join",
    "both tables": "join",
    "two tables": "join",
}
STOP = {
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "what's",
    "whats",
    "show",
    "me",
    "give",
    "list",
    "tell",
    "please",
    "find",
    "get",
    "compute",
    "calculate",
    "display",
    "do",
    "does",
    "did",
    "has",
    "have",
    "had",
    "there",
    "data",
    "dataset",
    "table",
    "it",
    "its",
    "that",
    "this",
    "those",
    "these",
    "on",
    "using",
    "at",
    "can",
    "you",
    "i",
    "we",
    "want",
    "would",
    "like",
    "see",
    "know",
    "overall",
    "all",
    "value",
    "values",
    "s",
    "'s",
    "?",
    "also",
    "any",
    "some",
    "my",
    "our",
    "just",
    "then",
    "let",
    "us",
    "could",
    "should",
    "will",
    "one",
    "ones",
    "thing",
    "things",
    "them",
    "they",
    "other",
    "others",
    "rest",
    "remaining",
    # greetings and filler
    *[
        "hey",
        "hi",
        "hello",
        "ok",
        "okay",
        "thanks",
        "thank",
        "whole",
        "file",
        "came",
        "come",
        "comes",
        "number",
    ],
}
# what a row is called when nothing else names it ("how many records ...")
ROW_NOUNS = frozenset(["records", "items", "entries", "observations", "samples", "cases", "lines"])


_KEYWORDS = (
    set(AGGS)
    | MOST
    | LEAST
    | GROUP_MARKERS
    | set(GRAINS)
    | set(CHARTS)
    | STOP
    | {w for p in PHRASES for w in p.split()}
)


@dataclass
class Span:
    start: int
    end: int
    kind: str  # column value table number year month agg most least group grain chart cmp word
    payload: Any = None


@dataclass
class Understood:
    query: q.Query


@dataclass
class NotUnderstood:
    unknown: list[str]  # the user's words it could not place
    did_you_mean: list[str] = field(default_factory=list)
    reason: str = ""
    suggestions: list[str] = field(default_factory=list)  # questions it can answer


Result = Understood | NotUnderstood

_TOKEN = re.compile(r"\d{4}-\d{2}-\d{2}|\d+(?:\.\d+)?%?|[<>!=]=?|[\w'&-]+", re.UNICODE)


_SYNONYMS = [
    (re.compile(r"\bstandard deviation\b|\bstd\.? dev\b", re.I), "std"),
    (re.compile(r"\bon average\b", re.I), "average"),
]


def raw_tokens(text: str) -> list[str]:
    """The question's words as written (case kept); a possessive "'s" is a word of its
    own ("AAPL's highest price")."""
    text = text.replace("\u2019", "'")  # a typographic apostrophe
    for pattern, word in _SYNONYMS:
        text = pattern.sub(word, text)
    out = []
    for token in _TOKEN.findall(text):
        token = token.strip("'")
        if token.lower().endswith("'s") and len(token) > 2:
            out += [token[:-2], "'s"]
        elif token:
            out.append(token)
    return out


def tokens(text: str) -> list[str]:
    return [t.lower() for t in raw_tokens(text)]


def _phrase_index(phrases: dict[str, Any]) -> list[tuple[list[str], Any]]:
    items = [(p.split(), v) for p, v in phrases.items()]
    return sorted(items, key=lambda item: -len(item[0]))


def _column_phrases(column: Column) -> set[tuple[str, ...]]:
    words = column.words.split()
    forms = {tuple(words), (column.name.lower(),)}
    last = words[-1] if words else ""
    if last.endswith("ies") and len(last) > 4:
        forms.add((*words[:-1], last[:-3] + "y"))
    elif last.endswith("s") and len(last) > 3:
        forms.add((*words[:-1], last[:-1]))
    elif last.endswith("y") and len(last) > 3 and last[-2] not in "aeiou":
        forms.add((*words[:-1], last[:-1] + "ies"))
    elif last:
        forms.add((*words[:-1], last + "s"))
    if len(words) == 2:
        forms.add((words[1], words[0]))  # "max temp" for temp_max
    return {f for f in forms if f and all(f)}


def _short_forms(table: Table) -> dict[tuple[str, ...], Column]:
    """Short names of multi-word columns: their initials (`Miles_per_Gallon` -> "mpg") and
    their first word when no other column starts with it (`Weight_in_lbs` -> "weight")."""
    out: dict[tuple[str, ...], Column] = {}
    firsts: dict[str, list[Column]] = {}
    for column in table.columns:
        words = column.words.split()
        if len(words) < 2:
            continue
        initials = "".join(w[0] for w in words)
        if len(initials) >= 3:
            out[(initials,)] = column
        firsts.setdefault(words[0], []).append(column)
    taken = {w for c in table.columns for w in [c.words]}
    for word, columns in firsts.items():
        if len(columns) == 1 and len(word) >= 4 and word not in taken and word not in _KEYWORDS:
            out[(word,)] = columns[0]
    return out


class Lexicon:
    """What each word of a question can be, for the session's tables."""

    def __init__(self, tables: list[Table]) -> None:
        self.tables = tables
        self.columns: list[tuple[tuple[str, ...], Table, Column]] = []
        self.values: list[tuple[tuple[str, ...], Table, Column, str]] = []
        for table in tables:
            named = {form for c in table.columns for form in _column_phrases(c)}
            for column in table.columns:
                for form in _column_phrases(column):
                    self.columns.append((form, table, column))
                for value in column.values:
                    form = tuple(tokens(value))
                    if form and not all(w.isdigit() for w in form):
                        self.values.append((form, table, column, value))
            for form, column in _short_forms(table).items():
                if form not in named:
                    self.columns.append((form, table, column))
        self.columns.sort(key=lambda item: -len(item[0]))
        self.values.sort(key=lambda item: -len(item[0]))
        self.table_forms: list[tuple[tuple[str, ...], Table]] = []
        for table in tables:
            for name in {table.variable, table.name, table.name.rsplit(".", 1)[0]}:
                form = tuple(tokens(name))
                if form:
                    self.table_forms.append((form, table))
                    last = form[-1]
                    other = last[:-1] if last.endswith("s") and len(last) > 3 else last + "s"
                    self.table_forms.append(((*form[:-1], other), table))  # car, cars
        self.phrases = _phrase_index(PHRASES)
        self.comparators = _phrase_index(COMPARATORS)

    def spans(self, words: list[str], written: list[str] | None = None) -> list[Span]:
        """Each word placed once, longest match first, left to right. `written`: the
        words with their case, to tell a value from a word of the grammar ("IN", "in")."""
        self.written = written or words
        out: list[Span] = []
        i = 0
        while i < len(words):
            span = self._at(words, i)
            if (
                span.kind == "unknown"
                and span.payload in ("type", "kind", "category", "class")
                and out
                and out[-1].kind == "column"
                and out[-1].payload[1].kind == TEXT
            ):
                span = Span(span.start, span.end, "stop")  # "weather type": the column
            out.append(span)
            i = span.end
        return out

    def _value_here(self, words: list[str], i: int, form: tuple[str, ...], value: str) -> bool:
        if tuple(words[i : i + len(form)]) != form:
            return False
        if len(form) == 1 and form[0] in _KEYWORDS:
            return self.written[i] == value  # the grammar's word unless written as the value
        return True

    def _adjective(self, word: str) -> tuple[Table, Column, str] | None:
        """A value's adjective: "rainy" -> rain, "sunny" -> sun, "foggy" -> fog."""
        if not word.endswith("y") or len(word) < 4:
            return None
        stems = {word[:-1], word[:-2] if word[-2] == word[-3] else word[:-1]}
        for form, table, column, value in self.values:
            if len(form) == 1 and form[0] in stems:
                return table, column, value
        return None

    def _at(self, words: list[str], i: int) -> Span:
        def match(form: Sequence[str]) -> bool:
            return tuple(words[i : i + len(form)]) == tuple(form)

        for form, table, column in self.columns:
            if match(form):
                return Span(i, i + len(form), "column", (table, column))
        for form, table, column, value in self.values:
            if self._value_here(words, i, form, value):
                return Span(i, i + len(form), "value", (table, column, value))
        for form, table in self.table_forms:
            if match(form):
                return Span(i, i + len(form), "table", table)
        for phrase, marker in self.phrases:  # "over time" before "over" (a comparison)
            if len(phrase) > 1 and match(phrase):
                return Span(i, i + len(phrase), "word", marker)
        for phrase, op in self.comparators:
            if match(phrase):
                return Span(i, i + len(phrase), "cmp", op)
        word = words[i]
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", word):
            return Span(i, i + 1, "date", word)
        if re.fullmatch(r"\d+(\.\d+)?%?", word):
            number = float(word.rstrip("%"))
            if number.is_integer() and 1800 <= number <= 2100 and "." not in word:
                return Span(i, i + 1, "year", int(number))
            return Span(i, i + 1, "number", int(number) if number.is_integer() else number)
        if word in q.MONTHS or (word[:3] in [m[:3] for m in q.MONTHS] and len(word) == 3):
            return Span(i, i + 1, "month", [m[:3] for m in q.MONTHS].index(word[:3]) + 1)
        if word in AGGS:
            return Span(i, i + 1, "agg", AGGS[word])
        if word in MOST:
            return Span(i, i + 1, "most")
        if word in LEAST:
            return Span(i, i + 1, "least")
        if word in GRAINS:
            return Span(i, i + 1, "grain", GRAINS[word])
        if word in CHARTS:
            return Span(i, i + 1, "chart", CHARTS[word])
        if word in ("negative", "positive"):
            return Span(i, i + 1, "sign", "<" if word == "negative" else ">")
        if word in GROUP_MARKERS:
            return Span(i, i + 1, "group")
        for phrase, marker in self.phrases:
            if match(phrase):
                return Span(i, i + len(phrase), "word", marker)
        if word in ROW_NOUNS:
            return Span(i, i + 1, "word", "rows")
        if word in STOP or (word.endswith("'s") and word[:-2] in STOP):
            return Span(i, i + 1, "stop")
        adjective = self._adjective(word)
        if adjective is not None:
            return Span(i, i + 1, "value", adjective)
        return Span(i, i + 1, "unknown", word)

    def did_you_mean(self, word: str) -> list[str]:
        names = {c.words: c.name for _, _, c in self.columns}
        names.update({c.name.lower(): c.name for _, _, c in self.columns})
        values = {v.lower(): f"{v} (a value of {c.name})" for _, _, c, v in self.values}
        found = []
        for close in difflib.get_close_matches(word, list(names), n=2, cutoff=0.75):
            found.append(names[close])
        for close in difflib.get_close_matches(word, list(values), n=2, cutoff=0.8):
            found.append(values[close])
        # a word inside a column's name: "temperature" -> temp_max? only if it starts it
        for words, name in names.items():
            starts = any(w.startswith(word[:4]) for w in words.split())
            if len(word) >= 4 and starts and name not in found:
                found.append(name)
        # a word of the questions it understands, misspelt ("corelation")
        grammar = [w for w in _KEYWORDS if len(w) >= 5]
        found += difflib.get_close_matches(word, grammar, n=1, cutoff=0.85)
        return list(dict.fromkeys(found))[:4]


# --- assembly --------------------------------------------------------------------------------


@dataclass
class _Reading:
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


def _within(column: Column, low: float, high: float) -> bool:
    """Whether a range could be about this numeric column's values."""
    if column.minimum is None or column.maximum is None:
        return True
    return column.minimum <= high and low <= column.maximum


def _date_column(table: Table, mentioned: list[Column]) -> Column | None:
    dates = [c for c in mentioned if c.kind == DATE] or table.of_kind(DATE)
    if len(dates) == 1:
        return dates[0]
    named = [c for c in dates if c.words in ("date", "day", "time", "timestamp")]
    return named[0] if len(named) == 1 else None


def _year_column(table: Table, mentioned: list[Column]) -> tuple[Column, bool] | None:
    """Where a year filters: a date column (its year), else a numeric column named year."""
    date = _date_column(table, mentioned)
    if date is not None:
        return date, True
    years = [c for c in table.columns if c.kind == NUMBER and c.words in ("year", "yr")]
    return (years[0], False) if years else None


class _Unplaced(Exception):
    def __init__(self, words: list[str], reason: str = "") -> None:
        super().__init__(reason)
        self.words, self.reason = words, reason


def _words_of(words: list[str], span: Span) -> str:
    return " ".join(words[span.start : span.end])


def _owners(span: Span, tables: list[Table]) -> list[Table]:
    """The tables that have a column of this span's name (or this value)."""
    if span.kind == "column":
        name = span.payload[1].name
        return [t for t in tables if t.column(name) is not None]
    _, column, value = span.payload
    return [t for t in tables if (c := t.column(column.name)) is not None and value in c.values]


def _which_table(
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
            raise _Unplaced([], "this session has one dataset: attach another one to join them")
        if len(candidates) < 2 and len(tables) == 2:
            candidates = {id(t): t for t in tables}
    if len(candidates) > 2:
        raise _Unplaced(
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
                raise _Unplaced(
                    [_words_of(words, span)], f"it is not a column or value of {table.name}"
                )
        return table, spans, None
    shared = [(s, owners) for s, owners in pointed if len(owners) > 1]
    if shared:
        span, owners = shared[0]
        names = [t.name for t in owners]
        both = " and ".join(names) if len(names) == 2 else ", ".join(names)
        raise _Unplaced(
            [_words_of(words, span)],
            f"{both} {'both' if len(names) == 2 else 'all'} have it: name the dataset, e.g. "
            f"“{_words_of(words, span)} of {names[-1]}”",
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
        raise _Unplaced([], str(exc)) from None
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
                raise _Unplaced(
                    [_words_of(words, span)],
                    f"{a.name} and {b.name} both have it: say which, e.g. “{name} of {b.name}”",
                )
            column = table.column(join.qualified(name, owners[0]))
        payload = (table, column) if span.kind == "column" else (table, column, span.payload[2])
        placed[i] = Span(span.start, span.end, span.kind, payload)
    out = [placed.get(i, span) for i, span in enumerate(spans) if i not in used]
    return table, out, join.spec(a, b, key)


def _read(words: list[str], spans: list[Span], tables: list[Table]) -> _Reading:
    table, spans, joined = _which_table(words, spans, tables)
    # the chosen table's own columns, whichever table the words were first matched in
    for span in spans:
        if span.kind == "column" and span.payload[0] is not table:
            span.payload = (table, table.column(span.payload[1].name))
        elif span.kind == "value" and span.payload[0] is not table:
            span.payload = (table, table.column(span.payload[1].name), span.payload[2])
    mentioned = [s.payload[1] for s in spans if s.kind == "column"]
    r = _Reading(table=table, join=joined, mentioned=[c.name for c in mentioned])
    consumed: set[int] = set()

    def kind_at(i: int) -> str | None:
        return spans[i].kind if 0 <= i < len(spans) else None

    for i, span in enumerate(spans):
        if span.kind in ("stop", "table"):
            consumed.add(i)
        elif span.kind == "word":
            r.markers.add(span.payload)
        elif span.kind == "agg":
            r.aggs.append(span.payload)
            consumed.add(i)
        elif span.kind in ("most", "least"):
            r.direction = "desc" if span.kind == "most" else "asc"
            consumed.add(i)
        elif span.kind == "chart":
            r.chart = span.payload
            consumed.add(i)

    # ranges and comparisons first: they own their numbers and years
    for i, span in enumerate(spans):
        if i in consumed:
            continue
        if span.kind == "word" and span.payload in ("between", "from"):
            low, joiner, high = (spans[i + k] if i + k < len(spans) else None for k in (1, 2, 3))
            if (
                low is not None
                and joiner is not None
                and high is not None
                and low.kind == high.kind
                and low.kind in ("year", "number")
                and joiner.kind == "word"
                and joiner.payload in ("and", "to")
            ):
                column = spans[i - 1].payload[1] if kind_at(i - 1) == "column" else None
                if (
                    column is not None
                    and low.kind == "year"
                    and _year_column(table, [])
                    and not _within(column, low.payload, high.payload)
                ):
                    column = None  # "average mpg between 1975 and 1980": years, not mpg
                if column is not None and column.kind == NUMBER:
                    r.filters += [
                        q.Filter(column.name, ">=", low.payload),
                        q.Filter(column.name, "<=", high.payload),
                    ]
                    consumed.add(i - 1)
                elif low.kind == "year":
                    where = _year_column(table, mentioned)
                    if where is None:
                        raise _Unplaced([_words_of(words, low)], "there is no date column")
                    col, is_date = where
                    if is_date:
                        r.filters.append(
                            q.Filter(col.name, "year_between", [low.payload, high.payload])
                        )
                    else:
                        r.filters += [
                            q.Filter(col.name, ">=", low.payload),
                            q.Filter(col.name, "<=", high.payload),
                        ]
                else:
                    raise _Unplaced([_words_of(words, span)], "I could not tell which column")
                consumed |= {i, i + 1, i + 2, i + 3}
        elif span.kind == "word" and span.payload in ("since", "before", "until"):
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            if nxt is not None and nxt.kind == "year":
                where = _year_column(table, mentioned)
                if where is None:
                    raise _Unplaced([_words_of(words, nxt)], "there is no date column")
                col, is_date = where
                op = {"since": ">=", "before": "<", "until": "<="}[span.payload]
                word = words[span.start]
                if word == "after":
                    op = ">"
                r.filters.append(q.Filter(col.name, f"year{op}" if is_date else op, nxt.payload))
                consumed |= {i, i + 1}
        elif span.kind == "cmp":
            op = span.payload
            back = i - 1
            while back > 0 and spans[back].kind == "stop":  # "income is more than"
                back -= 1
            before = spans[back] if back >= 0 else None
            after = spans[i + 1] if i + 1 < len(spans) else None
            after2 = spans[i + 2] if i + 2 < len(spans) else None
            if after is not None and after.kind in ("number", "year"):
                # "price > 100", "horsepower above 150", "more than 6 cylinders"
                if (
                    before is not None
                    and before.kind == "column"
                    and before.payload[1].kind == NUMBER
                ):
                    column = before.payload[1]
                    consumed.add(back)
                elif (
                    after2 is not None
                    and after2.kind == "column"
                    and after2.payload[1].kind == NUMBER
                ):
                    column = after2.payload[1]
                    consumed.add(i + 2)
                else:
                    raise _Unplaced([_words_of(words, span)], "I could not tell which column")
                r.filters.append(q.Filter(column.name, op, after.payload))
                consumed |= {i, i + 1}
            elif op == "!=":
                ahead = i + 1
                while (
                    ahead < len(spans)
                    and spans[ahead].kind in ("stop", "word")
                    and (spans[ahead].kind == "stop" or spans[ahead].payload == "filter")
                ):
                    ahead += 1  # "not in the USA"
                if ahead < len(spans) and spans[ahead].kind == "value":
                    _, column, value = spans[ahead].payload
                    r.filters.append(q.Filter(column.name, "!=", value))
                    consumed |= set(range(i, ahead + 1))
                    if (
                        before is not None
                        and before.kind == "column"
                        and before.payload[1] is column
                    ):
                        consumed.add(back)  # "whose country is not USA"

    # "a negative nonfarm_change": below zero
    for i, span in enumerate(spans):
        if span.kind == "sign" and kind_at(i + 1) == "column":
            column = spans[i + 1].payload[1]
            if column.kind == NUMBER:
                r.filters.append(q.Filter(column.name, span.payload, 0))
                consumed |= {i, i + 1}

    # "top 5", "5 highest": the number of a ranking
    for i, span in enumerate(spans):
        if i in consumed or span.kind != "number" or not float(span.payload).is_integer():
            continue
        rows_word = kind_at(i + 1) == "table" or (
            kind_at(i + 1) == "word" and spans[i + 1].payload == "rows"
        )
        later = any(s.kind in ("most", "least") for s in spans[i + 1 :])
        if (
            kind_at(i - 1) in ("most", "least")
            or kind_at(i + 1) in ("most", "least")
            or (rows_word and later)
        ):
            r.n = int(span.payload)
            consumed.add(i)

    # group-by: "by A (and B)", "per A", "for each A", "each A"; "by month"
    for i, span in enumerate(spans):
        if i in consumed or span.kind != "group":
            continue
        consumed.add(i)
        j = i + 1
        while j < len(spans):
            nxt = spans[j]
            if nxt.kind == "word" and nxt.payload == "count" and kind_at(j + 1) == "column":
                consumed.add(j)  # "per number of cylinders"
            elif nxt.kind == "column":
                r.per_group = True
                r.group_by.append(nxt.payload[1])
                consumed.add(j)
            elif nxt.kind == "grain":
                r.grain = nxt.payload
                consumed.add(j)
            elif (
                nxt.kind == "word"
                and nxt.payload == "and"
                and j + 1 < len(spans)
                and (spans[j + 1].kind in ("column", "grain"))
            ):
                consumed.add(j)
            else:
                break
            j += 1

    # "which weather ...": the column asked for is the group; "which year ...": a period
    for i, span in enumerate(spans):
        if not (span.kind == "word" and span.payload == "which"):
            continue
        if kind_at(i + 1) == "grain":
            r.which_grain = spans[i + 1].payload
            consumed |= {i, i + 1}
        elif kind_at(i + 1) == "column":
            column = spans[i + 1].payload[1]
            if column.kind == DATE:
                r.which_grain, r.date = GRAINS.get(column.words, "day"), column
                consumed |= {i, i + 1}
            elif column.kind in (TEXT, BOOL) or (column.kind == NUMBER and column.distinct):
                r.which = column
                consumed |= {i, i + 1}

    # "how many species": the number of distinct values of the column asked about
    for i, span in enumerate(spans):
        if (
            span.kind == "word"
            and span.payload == "count"
            and words[span.start] in ("how", "number")
            and kind_at(i + 1) == "column"
            and i + 1 not in consumed
        ):
            r.counted = spans[i + 1].payload[1]

    # adverbs of time ("monthly"), "per day" handled above; a grain word alone ("days")
    for i, span in enumerate(spans):
        if i in consumed or span.kind != "grain":
            continue
        word = words[span.start]
        if word.endswith("ly") or word == "annual":
            if kind_at(i - 1) == "agg" and kind_at(i + 1) == "column":
                # "average monthly X": the average of monthly values. Rows that are months
                # already (a date column named "month") make it the plain average.
                date = _date_column(table, mentioned)
                if date is None or GRAINS.get(date.words) != span.payload:
                    raise _Unplaced(
                        [word],
                        f"per {span.payload}, or the average of the {word} values?",
                    )
            else:
                r.grain = span.payload
        consumed.add(i)  # "how many days": rows

    # values, years, months, numbers next to a column: filters
    for i, span in enumerate(spans):
        if i in consumed:
            continue
        if span.kind == "value":
            _, column, value = span.payload
            r.values.append((column, value))
            consumed.add(i)
            back = i - 1
            while back >= 0 and spans[back].kind in ("stop", "cmp") and back not in consumed:
                back -= 1  # "weather is rain", "where the weather = rain"
            if kind_at(back) == "column" and spans[back].payload[1] is column:
                consumed.add(back)
        elif span.kind == "year":
            where = _year_column(table, mentioned)
            if where is None:
                raise _Unplaced([_words_of(words, span)], "there is no date or year column")
            col, is_date = where
            r.filters.append(q.Filter(col.name, "year" if is_date else "==", span.payload))
            consumed.add(i)
            if not is_date:
                consumed |= {
                    j for j, s in enumerate(spans) if s.kind == "column" and s.payload[1] is col
                }
        elif span.kind == "month":
            date = _date_column(table, mentioned)
            if date is None:
                raise _Unplaced([_words_of(words, span)], "there is no date column")
            r.filters.append(q.Filter(date.name, "month", span.payload))
            consumed.add(i)
        elif span.kind == "number":
            nxt, prev = (
                (spans[i + 1] if i + 1 < len(spans) else None),
                (spans[i - 1] if i else None),
            )
            if nxt is not None and nxt.kind == "column" and nxt.payload[1].kind == NUMBER:
                column = nxt.payload[1]  # "8 cylinders"
                r.filters.append(q.Filter(column.name, "==", span.payload))
                consumed |= {i, i + 1}
            elif (
                prev is not None
                and prev.kind == "column"
                and prev.payload[1].kind == NUMBER
                and (i - 1 not in consumed)
            ):
                column = prev.payload[1]  # "cylinders 8", "where cylinders = 8" (= is cmp)
                r.filters.append(q.Filter(column.name, "==", span.payload))
                consumed |= {i - 1, i}
        elif span.kind == "date":
            date = _date_column(table, mentioned)
            if date is None:
                raise _Unplaced([_words_of(words, span)], "there is no date column")
            r.filters.append(q.Filter(date.name, "date", span.payload))
            consumed.add(i)

    # the remaining columns are what is measured
    for i, span in enumerate(spans):
        if i not in consumed and span.kind == "column":
            r.measures.append(span.payload[1])
            consumed.add(i)
    left = [
        _words_of(words, s)
        for i, s in enumerate(spans)
        if i not in consumed
        and s.kind in ("number", "cmp", "unknown", "date", "month", "year", "sign")
    ]
    if left:
        raise _Unplaced(left, "I could not tell what these refer to")
    r.date = _date_column(table, [*r.measures, *r.group_by])
    return r


class _Clarify(Exception):
    """The question is understood but leaves a choice open: ask, with runnable options."""

    def __init__(self, reason: str, options: list[str]) -> None:
        super().__init__(reason)
        self.reason, self.options = reason, options


def _choose(r: _Reading) -> q.Query:
    t, m = r.table, r.markers
    numeric = [c for c in r.measures if c.kind == NUMBER]
    others = [c for c in r.measures if c.kind != NUMBER]
    agg = r.aggs[0] if r.aggs else None
    filters = list(r.filters)
    groups_named: list[str] = []

    def base(intent: str, **kw: Any) -> q.Query:
        return q.Query(intent=intent, table=t.variable, filters=filters, **kw)

    # named values: filters, or the groups of a comparison
    compare = "compare" in m or "versus" in m
    by_column: dict[str, list[str]] = {}
    for column, value in r.values:
        by_column.setdefault(column.name, []).append(value)
    for name, values in by_column.items():
        if compare and len(values) >= 2:
            groups_named, compare_column = values, name
        elif len(values) > 1:
            filters.append(q.Filter(name, "in", values))
        else:
            filters.append(q.Filter(name, "==", values[0]))

    if "model" in m:
        if not r.measures:
            raise _Clarify("which column to predict", [])
        target = r.measures[0]
        features = [c.name for c in t.of_kind(NUMBER) if c is not target][:20]
        if not features:
            raise _Clarify(f"there are no numeric columns to predict {target.name} from", [])
        return base(q.MODEL, measure=target.name, group_by=features)
    if "missing" in m:
        return base(q.MISSING, group_by=[c.name for c in r.measures])
    if "shape" in m or ({"count", "rows", "columns"} <= m and not r.measures):
        return base(q.SHAPE)
    if "columns" in m and not r.measures and not r.group_by and not agg:
        return base(q.COLUMNS)
    if "correlation" in m:
        if len(numeric) >= 2:
            return base(q.CORRELATION, measure=numeric[0].name, other=numeric[1].name)
        if not r.measures:
            return base(q.CORRELATION)
        raise _Clarify("a correlation needs two numeric columns", [])
    if "distribution" in m and len(r.measures) == 1:
        group = [c.name for c in r.group_by]
        return base(q.DISTRIBUTION, measure=r.measures[0].name, group_by=group[:1], chart=r.chart)
    if "distinct" in m and len(r.measures) == 1:
        if "count" in m:
            return base(q.AGGREGATE, measure=r.measures[0].name, agg="nunique")
        return base(q.DISTINCT, measure=r.measures[0].name)
    if groups_named:
        if not numeric:
            return base(q.COUNT, group_by=[compare_column], groups=groups_named, chart=r.chart)
        if agg is None:
            raise _Clarify(
                "which summary of " + numeric[0].name + " to compare",
                [f"compare the average {numeric[0].name} of {' and '.join(groups_named)}"],
            )
        return base(
            q.COMPARE,
            measure=numeric[0].name,
            agg=agg,
            group_by=[compare_column],
            groups=groups_named,
            chart=r.chart,
        )
    if "versus" in m and len(numeric) >= 2:
        return base(q.SCATTER, measure=numeric[0].name, other=numeric[1].name)
    if compare and len(numeric) == 1 and agg is None and (r.group_by or others):
        # "income across education, compare them": the distributions, no summary assumed
        group = [c.name for c in r.group_by] or [others[0].name]
        return base(q.DISTRIBUTION, measure=numeric[0].name, group_by=group[:1], chart="box")
    dated = [c for c in r.group_by if c.kind == DATE]
    if dated and r.grain is None:
        # "by year" where Year is a date: per year; "by date": per day
        r.grain = GRAINS.get(dated[0].words, "day")
        r.date = dated[0]
        r.group_by = [c for c in r.group_by if c is not dated[0]]
    if r.which_grain is not None:
        # "which year had the most total precipitation": periods ranked
        date = r.date or _date_column(t, [])
        if date is None:
            raise _Clarify("there is no date column to take periods from", [])
        measure = next((c for c in numeric), None)
        if measure is not None and agg is None:
            raise _Clarify(
                f"which summary of {measure.name} per {r.which_grain}",
                [
                    f"which {r.which_grain} has the highest total {measure.name}",
                    f"which {r.which_grain} has the highest average {measure.name}",
                ],
            )
        return base(
            q.TREND,
            measure=measure.name if measure else None,
            agg=agg if measure else "count",
            date=date.name,
            grain=r.which_grain,
            rank=(r.direction or "desc", r.n or 1),
        )
    trend = "trend" in m or r.grain is not None
    if trend:
        date = r.date or _date_column(t, [])
        if date is None:
            raise _Clarify("there is no date column to follow over time", [])
        measure = next((c for c in numeric), None)
        return base(
            q.TREND,
            measure=measure.name if measure else None,
            agg=(agg or "mean") if measure else "count",
            date=date.name,
            grain=r.grain or "month",
            group_by=[c.name for c in r.group_by if c is not date],
            chart=r.chart,
        )
    group = [c.name for c in r.group_by]
    if r.which is not None:
        group = [r.which.name, *group]
    if "share" in m:
        if not group:
            if filters:
                return base(q.SHARE)
            raise _Clarify("a share of what, split by which column", [])
        share_of = numeric[0].name if numeric else None
        return base(
            q.SHARE, measure=share_of, agg="sum" if share_of else "count", group_by=group[:1]
        )
    if "frequent" in m and (others or group):
        counted = group[0] if group else others[0].name
        return base(q.COUNT, group_by=[counted], rank=(r.direction or "desc", r.n or 1))
    if (
        r.direction is not None
        and r.n is None
        and r.which is None
        and r.per_group
        and numeric
        and group
    ):
        # "the highest price for each symbol": the maximum per group, nothing ranked
        extreme = agg or ("max" if r.direction == "desc" else "min")
        return base(q.AGGREGATE, measure=numeric[0].name, agg=extreme, group_by=group[:1])
    if r.direction is not None or r.n is not None:
        direction, n = r.direction or "desc", r.n or (1 if r.which else 5)
        # "by <a number column>" in a ranking is what is ranked, not a group
        ranked = numeric + [c for c in r.group_by if c.kind == NUMBER]
        group = [g for g in group if t.column(g) is None or t.column(g).kind != NUMBER]  # type: ignore[union-attr]
        group += [c.name for c in others if c.name not in group]
        if group and not ranked:  # "which state has the most airports"
            return base(q.COUNT, group_by=group[:1], rank=(direction, n))
        if not ranked:
            raise _Clarify("which column to rank by", [])
        ranked_name = ranked[0].name
        if group:
            if agg is None:
                first = t.column(group[0])
                unique = (
                    first is not None and first.distinct is not None and t.rows == first.distinct
                )
                if not unique:
                    words = "top" if direction == "desc" else "bottom"
                    most = "highest" if direction == "desc" else "lowest"
                    raise _Clarify(
                        f"{group[0]} repeats, so its {ranked_name} needs a summary",
                        [
                            f"{words} {n} {group[0]} by average {ranked_name}",
                            f"{words} {n} {group[0]} by total {ranked_name}",
                            f"the {n} rows with the {most} {ranked_name}",
                        ],
                    )
                agg = "max" if direction == "desc" else "min"
            return base(
                q.AGGREGATE, measure=ranked_name, agg=agg, group_by=group[:1], rank=(direction, n)
            )
        if agg is not None and r.n is None and not r.which:
            # "the highest average price" with no group: just the aggregate
            return base(q.AGGREGATE, measure=ranked_name, agg=agg)
        if r.n is None and r.which is None and not agg:
            # "the highest temp_max": one value
            return base(
                q.AGGREGATE, measure=ranked_name, agg="max" if direction == "desc" else "min"
            )
        return base(q.ROWS, measure=ranked_name, rank=(direction, n))
    if agg is not None:
        if "count" in m and not numeric:
            raise _Clarify("what to count", [])
        if not numeric:
            if r.measures:
                raise _Clarify(f"{r.measures[0].name} is not numeric", [])
            raise _Clarify("which column to summarise", [])
        return base(q.AGGREGATE, measure=numeric[0].name, agg=agg, group_by=group, chart=r.chart)
    if "count" in m:
        if r.counted is not None and not group and "rows" not in m:
            # "how many species", "number of years": distinct values
            return base(q.AGGREGATE, measure=r.counted.name, agg="nunique")
        if others and not group:
            group = [others[0].name]
        return base(q.COUNT, group_by=group, chart=r.chart)
    if "describe" in m:
        return base(q.DESCRIBE)
    if group and numeric:
        # "net generation for each source in 2010": the values, if each group has one
        return base(q.LOOKUP, measure=numeric[0].name, group_by=group[:1])
    if numeric and filters and len(r.measures) == 1:
        # "the price of AAPL in March 2008": the matching rows' values
        return base(q.LOOKUP, measure=numeric[0].name)
    if r.measures:
        c = r.measures[0]
        options = (
            [f"distribution of {c.name}", f"average {c.name}", f"top 5 rows by {c.name}"]
            if c.kind == NUMBER
            else [f"rows per {c.name}", f"distinct values of {c.name}"]
        )
        raise _Clarify(f"what to do with {c.name}", options)
    raise _Clarify("what to compute", [])


_FOLLOW_UP = re.compile(r"^\s*(and|now|what about|how about|same|instead|also|only|but)\b", re.I)


def _filter_slot(f: q.Filter) -> tuple[str, str]:
    """What a follow-up's filter replaces: "and for 2015?" the year (not the month) of the
    same column, "now above 200" the lower bound, "what about Europe" the value."""
    if f.op.startswith("year"):
        family = "year"
    elif f.op in (">", ">="):
        family = "lower"
    elif f.op in ("<", "<="):
        family = "upper"
    elif f.op in ("==", "in", "!="):
        family = "value"
    else:
        family = f.op  # month, date
    return f.column, family


def _follow_up(r: _Reading, previous: q.Query) -> q.Query | None:
    """Change the previous plan: "now only for 2012", "and the median?", "as a line chart",
    "by month instead"."""
    intents = {"missing", "shape", "columns", "correlation", "distribution", "distinct", "share"}
    if r.markers & intents or (r.measures and r.aggs == [] and not r.values):
        return None
    new = q.Query.from_dict(previous.to_dict())
    changed = False
    if r.aggs:
        new.agg, changed = r.aggs[0], True
    for column, value in r.values:
        r.filters.append(q.Filter(column.name, "==", value))
    if r.filters:
        replaced = {_filter_slot(g) for g in r.filters}
        kept = [f for f in new.filters if _filter_slot(f) not in replaced]
        new.filters, changed = kept + r.filters, True
    if r.grain:
        new.grain, changed = r.grain, True
        if new.intent != q.TREND:
            date = r.date or _date_column(r.table, [])
            if date is None:
                return None
            new.intent, new.date, new.group_by = q.TREND, date.name, []
            new.agg = new.agg or "mean"
    if r.group_by and not r.grain:
        new.group_by, changed = [c.name for c in r.group_by], True
    if r.chart:
        new.chart, changed = r.chart, True
    if r.measures and r.measures[0].kind == NUMBER:
        new.measure, changed = r.measures[0].name, True
    if r.direction or r.n:
        new.rank = (r.direction or "desc", r.n or (new.rank[1] if new.rank else 5))
        changed = True
    return new if changed else None


# Words that ask for one kind of answer: a plan of another kind answers something else.
_MARKED_INTENTS = {
    "share": {q.SHARE},
    "correlation": {q.CORRELATION, q.SCATTER},
    "distribution": {q.DISTRIBUTION},
    "missing": {q.MISSING},
    "model": {q.MODEL},
    "distinct": {q.DISTINCT, q.AGGREGATE},
    "trend": {q.TREND},
}


def _check_intent(markers: set[str], query: q.Query) -> None:
    for marker, intents in _MARKED_INTENTS.items():
        if marker in markers and query.intent not in intents:
            raise _Clarify(f"how “{marker}” fits the rest of the question", [])


def _check_columns(query: q.Query, tables: list[Table]) -> None:
    """The plan uses only columns of the table it runs on, and a join uses both datasets
    (else part of the question was not placed)."""
    table = join.rebuild(tables, query.table, query.join)
    used = _columns_used(query)
    if any(table.column(name) is None for name in used):
        raise _Clarify("which dataset each column comes from", [])
    if query.join:
        idle = join.idle_sides(tables, query, used)
        if idle:
            raise _Clarify(f"what {' and '.join(idle)} adds to this question", [])


def _columns_used(query: q.Query) -> set[str]:
    used = {query.measure, query.other, query.date, *query.group_by}
    used |= {f.column for f in query.filters}
    if query.intent == q.MODEL:
        used |= set(query.group_by)
    return {c for c in used if c}


def understand(question: str, tables: list[Table], previous: q.Query | None = None) -> Result:
    lexicon = Lexicon(tables)
    written = raw_tokens(question)
    words = [w.lower() for w in written]
    spans = lexicon.spans(words, written)
    unknown = [s.payload for s in spans if s.kind == "unknown"]
    if unknown:
        hints = [h for w in unknown for h in lexicon.did_you_mean(w)]
        return NotUnderstood(unknown, list(dict.fromkeys(hints)), "", suggestions(tables))
    if not tables:
        return NotUnderstood([], [], "this session has no dataset", [])
    try:
        reading = _read(words, spans, tables)
        mentioned = list(dict.fromkeys(reading.mentioned))
        query = None
        if previous is not None and previous.table == reading.table.variable:
            follow = _FOLLOW_UP.search(question) is not None or not (
                reading.measures or reading.markers & {"count", "describe", "trend"}
            )
            if follow:
                query = _follow_up(reading, previous)
        if query is None:
            query = _choose(reading)
            query.join = reading.join
            _check_intent(reading.markers, query)
        _check_columns(query, tables)
        if len(tables) > 1 and not query.join:
            query.dataset = reading.table.name
        used = _columns_used(query) | ({query.join["on"]} if query.join else set())
        left_out = [name for name in mentioned if name not in used]
        if left_out:
            # never an answer that drops part of the question
            raise _Clarify(f"how {', '.join(left_out)} fits this question", [])
        return Understood(query)
    except _Unplaced as exc:
        hints = [h for w in exc.words for h in lexicon.did_you_mean(w) if h != w]
        return NotUnderstood(exc.words, hints, exc.reason, suggestions(tables))
    except _Clarify as exc:
        return NotUnderstood([], [], exc.reason, exc.options or suggestions(tables))
