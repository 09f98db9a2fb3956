"""What each word of a question can be, for the session's tables: spans over the words
(columns, values, datasets, numbers, the grammar's words), and "did you mean".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.agent.nlq import query as q
from worker.agent.nlq.schema import TEXT, Column, Table
from worker.agent.nlq.vocabulary import (
    _KEYWORDS,
    AGGS,
    CHARTS,
    COMPARATORS,
    GRAINS,
    GROUP_MARKERS,
    LEAST,
    MOST,
    PHRASES,
    ROW_NOUNS,
    STOP,
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
