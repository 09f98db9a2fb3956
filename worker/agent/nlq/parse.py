"""Question -> `Query`, precision first (the vocabulary, the lexicon, which table and the
reading of spans are in the modules beside this one; the intent is chosen here).

Every word of the question must be accounted for: a column, a value of a column, a
dataset, a number, a year or month, one of the words the grammar knows (aggregates,
"by"/"per", comparisons, rankings, intents, chart kinds) or a word that carries no meaning
here ("the", "show", "please"). A word that is none of these is not guessed at: the
question is not answered, the reply names the words it did not understand, offers "did
you mean" for columns and values spelt closely, and suggests plans it can run.
"""

from __future__ import annotations

import re
from typing import Any

from api.profiles import suggestions
from worker.agent.nlq import join
from worker.agent.nlq import query as q
from worker.agent.nlq.lexicon import Lexicon, NotUnderstood, Result, Understood, raw_tokens
from worker.agent.nlq.reading import read
from worker.agent.nlq.schema import DATE, NUMBER, Table
from worker.agent.nlq.tables import Reading, Unplaced, date_column
from worker.agent.nlq.vocabulary import GRAINS


class _Clarify(Exception):
    """The question is understood but leaves a choice open: ask, with runnable options."""

    def __init__(self, reason: str, options: list[str]) -> None:
        super().__init__(reason)
        self.reason, self.options = reason, options


def _choose(r: Reading) -> q.Query:
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
        date = r.date or date_column(t, [])
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
        date = r.date or date_column(t, [])
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


def _follow_up(r: Reading, previous: q.Query) -> q.Query | None:
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
            date = r.date or date_column(r.table, [])
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
        reading = read(words, spans, tables)
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
    except Unplaced as exc:
        hints = [h for w in exc.words for h in lexicon.did_you_mean(w) if h != w]
        return NotUnderstood(exc.words, hints, exc.reason, suggestions(tables))
    except _Clarify as exc:
        return NotUnderstood([], [], exc.reason, exc.options or suggestions(tables))


__all__ = ["NotUnderstood", "Result", "Understood", "understand"]
