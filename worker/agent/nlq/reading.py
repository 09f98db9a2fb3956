"""Spans -> a `Reading`: filters, groups, measures, ranks, grains and markers."""

from __future__ import annotations

from worker.agent.nlq import query as q
from worker.agent.nlq.lexicon import Span
from worker.agent.nlq.schema import BOOL, DATE, NUMBER, TEXT, Table
from worker.agent.nlq.tables import (
    Reading,
    Unplaced,
    date_column,
    which_table,
    within,
    words_of,
    year_column,
)
from worker.agent.nlq.vocabulary import GRAINS


def read(words: list[str], spans: list[Span], tables: list[Table]) -> Reading:
    table, spans, joined = which_table(words, spans, tables)
    # the chosen table's own columns, whichever table the words were first matched in
    for span in spans:
        if span.kind == "column" and span.payload[0] is not table:
            span.payload = (table, table.column(span.payload[1].name))
        elif span.kind == "value" and span.payload[0] is not table:
            span.payload = (table, table.column(span.payload[1].name), span.payload[2])
    mentioned = [s.payload[1] for s in spans if s.kind == "column"]
    r = Reading(table=table, join=joined, mentioned=[c.name for c in mentioned])
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
                    and year_column(table, [])
                    and not within(column, low.payload, high.payload)
                ):
                    column = None  # "average mpg between 1975 and 1980": years, not mpg
                if column is not None and column.kind == NUMBER:
                    r.filters += [
                        q.Filter(column.name, ">=", low.payload),
                        q.Filter(column.name, "<=", high.payload),
                    ]
                    consumed.add(i - 1)
                elif low.kind == "year":
                    where = year_column(table, mentioned)
                    if where is None:
                        raise Unplaced([words_of(words, low)], "there is no date column")
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
                    raise Unplaced([words_of(words, span)], "I could not tell which column")
                consumed |= {i, i + 1, i + 2, i + 3}
        elif span.kind == "word" and span.payload in ("since", "before", "until"):
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            if nxt is not None and nxt.kind == "year":
                where = year_column(table, mentioned)
                if where is None:
                    raise Unplaced([words_of(words, nxt)], "there is no date column")
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
                    raise Unplaced([words_of(words, span)], "I could not tell which column")
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
                date = date_column(table, mentioned)
                if date is None or GRAINS.get(date.words) != span.payload:
                    raise Unplaced(
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
            where = year_column(table, mentioned)
            if where is None:
                raise Unplaced([words_of(words, span)], "there is no date or year column")
            col, is_date = where
            r.filters.append(q.Filter(col.name, "year" if is_date else "==", span.payload))
            consumed.add(i)
            if not is_date:
                consumed |= {
                    j for j, s in enumerate(spans) if s.kind == "column" and s.payload[1] is col
                }
        elif span.kind == "month":
            date = date_column(table, mentioned)
            if date is None:
                raise Unplaced([words_of(words, span)], "there is no date column")
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
            date = date_column(table, mentioned)
            if date is None:
                raise Unplaced([words_of(words, span)], "there is no date column")
            r.filters.append(q.Filter(date.name, "date", span.payload))
            consumed.add(i)

    # the remaining columns are what is measured
    for i, span in enumerate(spans):
        if i not in consumed and span.kind == "column":
            r.measures.append(span.payload[1])
            consumed.add(i)
    left = [
        words_of(words, s)
        for i, s in enumerate(spans)
        if i not in consumed
        and s.kind in ("number", "cmp", "unknown", "date", "month", "year", "sign")
    ]
    if left:
        raise Unplaced(left, "I could not tell what these refer to")
    r.date = date_column(table, [*r.measures, *r.group_by])
    return r
