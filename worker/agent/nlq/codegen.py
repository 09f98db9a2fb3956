"""`Query` -> the pandas/plotly snippet that answers it.

The snippet runs in the sandbox like any model's code. Its last expression is the answer (a
number, a name, or a table); a chart is a Plotly figure it makes; the reply says the plan in
plain words, then the value (and its `unit`) or the table. Dates kept as text are parsed
where they are used (`pd.to_datetime(..., format="mixed")`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from worker.agent.nlq import query as q
from worker.agent.nlq.schema import DATE, INDEX, Table

_PERIOD = {"year": "Y", "quarter": "Q", "month": "M", "week": "W", "day": "D"}
_AGG_CODE = {"mean", "median", "sum", "min", "max", "std", "nunique"}


@dataclass
class Snippet:
    code: str
    unit: str  # said after the value ("rows", "% of the rows"), or ""


def _index_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.kind == INDEX]


def _s(text: str) -> str:
    return json.dumps(text)


def _lit(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


class _Writer:
    def __init__(self, query: q.Query, table: Table) -> None:
        self.query, self.table = query, table
        self.lines = ["import pandas as pd", "import plotly.express as px"]

    def col(self, name: str) -> str:
        return f"data[{_s(name)}]"

    def date(self, name: str) -> str:
        """A date column as datetimes (parsed once if it is stored as text)."""
        column = self.table.column(name)
        if column is None or column.kind != DATE or not column.stored_as_text:
            return f"pd.to_datetime(data[{_s(name)}])"
        return f'pd.to_datetime(data[{_s(name)}], errors="coerce", format="mixed")'

    def condition(self, f: q.Filter) -> str:
        column = self.col(f.column)
        if f.op in ("year", "year_between", "month", "date") or f.op.startswith("year"):
            moment = self.date(f.column)
            if f.op == "year":
                return f"({moment}.dt.year == {int(f.value)})"
            if f.op == "year_between":
                low, high = f.value
                return f"({moment}.dt.year.between({int(low)}, {int(high)}))"
            if f.op == "month":
                return f"({moment}.dt.month == {int(f.value)})"
            if f.op == "date":
                return f"({moment}.dt.normalize() == pd.Timestamp({_s(str(f.value))}))"
            return f"({moment}.dt.year {f.op[4:]} {int(f.value)})"
        if f.op == "in":
            return f"({column}.isin({list(f.value)!r}))"
        return f"({column} {f.op} {_lit(f.value)})"

    def source(self) -> None:
        if self.table.source:
            self.lines.extend(self.table.source)
        else:
            self.lines.append(f"data = {self.query.table}")
        if self.query.filters:
            conditions = " & ".join(self.condition(f) for f in self.query.filters)
            self.lines.append(f"data = data[{conditions}]")

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def number(self, expression: str) -> str:
        """One number, rounded; with filters, what no matching row gives is said, not NaN."""
        value = f"round(float({expression}), 4)"
        if self.query.filters:
            return f'({value} if len(data) else "no rows match these filters")'
        return value

    def code(self) -> str:
        return "\n".join(self.lines)


def _rank(out: str, column: str, rank: tuple[str, int]) -> str:
    order, n = rank
    return f"{out}.{'nlargest' if order == 'desc' else 'nsmallest'}({n}, {_s(column)})"


def snippet(query: q.Query, table: Table) -> Snippet:
    w = _Writer(query, table)
    w.source()
    plan = query.words()
    qy = query
    chart = qy.chart
    title = _s(plan[:1].upper() + plan[1:])

    if qy.intent == q.SHAPE:
        w.emit("data.shape")
        return Snippet(w.code(), "(rows, columns)")
    if qy.intent == q.COLUMNS:
        w.emit('data.dtypes.astype(str).rename("type").to_frame()')
        return Snippet(w.code(), "")
    if qy.intent == q.MISSING:
        picked = f"data[{qy.group_by!r}]" if qy.group_by else "data"
        w.emit(
            f"missing = {picked}.isna().sum()",
            'out = missing.to_frame("missing")',
            'out["percent"] = (missing / max(len(data), 1) * 100).round(2)',
            'out = out[out["missing"] > 0].sort_values("missing", ascending=False)',
            'out if len(out) else "none"',
        )
        return Snippet(w.code(), "")
    if qy.intent == q.DESCRIBE:
        w.emit(f'data.drop(columns={_index_columns(table)!r}).describe(include="all").T')
        return Snippet(w.code(), "")
    if qy.intent == q.DISTINCT:
        c = qy.measure or ""
        w.emit(
            f"values = {w.col(c)}.dropna().drop_duplicates().sort_values()",
            f"print(len(values), 'distinct values of', {_s(c)})",
            "values.reset_index(drop=True).to_frame()",
        )
        return Snippet(w.code(), "")
    if qy.intent == q.MODEL:
        target, features = qy.measure or "", list(qy.group_by)
        column = table.column(target)
        if column is not None and column.kind == "number":
            estimator, score = "LinearRegression()", "r2_score"
            imports = (
                "from sklearn.linear_model import LinearRegression\n"
                "from sklearn.metrics import r2_score"
            )
        else:
            estimator, score = "LogisticRegression(max_iter=1000)", "accuracy_score"
            imports = (
                "from sklearn.linear_model import LogisticRegression\n"
                "from sklearn.metrics import accuracy_score"
            )
        w.emit(
            imports,
            "from sklearn.model_selection import train_test_split",
            f"rows = data[{[*features, target]!r}].dropna()",
            f"X, y = rows[{features!r}], rows[{_s(target)}]",
            "X_train, X_test, y_train, y_test = train_test_split("
            "X, y, test_size=0.25, random_state=0)",
            f"model = {estimator}.fit(X_train, y_train)",
            f"round(float({score}(y_test, model.predict(X_test))), 4)",
        )
        what = "R²" if score == "r2_score" else "accuracy"
        return Snippet(w.code(), f"({what} on a held-out 25 % of the rows)")
    if qy.intent == q.DISTRIBUTION:
        c = qy.measure or ""
        column = table.column(c)
        if qy.group_by:
            g = qy.group_by[0]
            w.emit(
                f"fig = px.box(data, x={_s(g)}, y={_s(c)}, title={title})",
                f"data.groupby({_s(g)})[{_s(c)}].describe().round(4)",
            )
            return Snippet(w.code(), "")
        if column is not None and column.kind == "number":
            w.emit(
                f"fig = px.{'box' if chart == 'box' else 'histogram'}(data, "
                f"{'y' if chart == 'box' else 'x'}={_s(c)}, title={title})",
                f"{w.col(c)}.describe().round(4).to_frame()",
            )
            return Snippet(w.code(), "")
        w.emit(
            f"out = {w.col(c)}.value_counts(dropna=False).rename('rows').reset_index()",
            f"fig = px.bar(out.head(30), x={_s(c)}, y='rows', title={title})",
            f"out.set_index({_s(c)})",
        )
        return Snippet(w.code(), "")
    if qy.intent == q.CORRELATION:
        if qy.measure and qy.other:
            w.emit(w.number(f"{w.col(qy.measure)}.corr({w.col(qy.other)})"))
            return Snippet(w.code(), "")
        w.emit(
            f'corr = data.drop(columns={_index_columns(table)!r}).select_dtypes("number")'
            ".corr().round(3)",
            'fig = px.imshow(corr, text_auto=True, title="Correlation matrix", '
            'color_continuous_scale="RdBu_r", zmin=-1, zmax=1)',
            "corr",
        )
        return Snippet(w.code(), "")
    if qy.intent == q.SCATTER:
        a, b = qy.measure or "", qy.other or ""
        w.emit(
            f"fig = px.scatter(data, x={_s(b)}, y={_s(a)}, title={title})",
            w.number(f"{w.col(a)}.corr({w.col(b)})"),
        )
        return Snippet(w.code(), "(their correlation)")
    if qy.intent == q.COUNT:
        if not qy.group_by:
            w.emit("len(data)")
            return Snippet(w.code(), "rows")
        g, keys = qy.group_by[0], _keys(qy.group_by)
        keep_missing = "False" if qy.rank is None else "True"  # a ranking names values
        w.emit(
            f"out = data.groupby({keys}, dropna={keep_missing}).size().rename('rows').reset_index()"
        )
        if qy.groups:
            w.emit(f"out = out[out[{_s(g)}].isin({qy.groups!r})]")
        if qy.rank is not None:
            w.emit(f"out = {_rank('out', 'rows', qy.rank)}")
            if qy.rank[1] == 1 and len(qy.group_by) == 1:
                w.emit(f"out.iloc[0][{_s(g)}]")
                return Snippet(w.code(), "")
        else:
            w.emit('out = out.sort_values("rows", ascending=False)')
        color = f", color={_s(qy.group_by[1])}" if len(qy.group_by) > 1 else ""
        kind = "pie" if chart == "pie" and not color else "bar"
        names = f"names={_s(g)}, values='rows'" if kind == "pie" else f"x={_s(g)}, y='rows'{color}"
        w.emit(f"fig = px.{kind}(out.head(50), {names}, title={title})", f"out.set_index({keys})")
        return Snippet(w.code(), "")
    if qy.intent == q.ROWS:
        rank = qy.rank or ("desc", 5)
        w.emit(_rank("data", qy.measure or "", rank) + ".reset_index(drop=True)")
        return Snippet(w.code(), "")
    if qy.intent == q.LOOKUP:
        c = qy.measure or ""
        if qy.group_by:
            g = qy.group_by[0]
            w.emit(
                f"several = data.groupby({_s(g)}).size().max()",
                "if several > 1:",
                f"    raise ValueError(f'{g} has up to {{several}} rows each: ask for an average, "
                "a total, a maximum...')",
                f"data.set_index({_s(g)})[[{_s(c)}]]",
            )
            return Snippet(w.code(), "")
        shown = list(dict.fromkeys([*(f.column for f in qy.filters), c]))
        w.emit(
            f"rows = data[{shown!r}]",
            f"rows[{_s(c)}].iloc[0] if len(rows) == 1 else rows.head(50)",
        )
        return Snippet(w.code(), "")
    if qy.intent == q.SHARE:
        if not qy.group_by:
            w.emit(f"round(len(data) / max(len({qy.table}), 1) * 100, 2)")
            return Snippet(w.code(), "% of the rows")
        g = qy.group_by[0]
        total = (
            f"data.groupby({_s(g)}, dropna=False)[{_s(qy.measure)}].sum()"
            if qy.measure
            else f"data.groupby({_s(g)}, dropna=False).size()"
        )
        w.emit(
            f"totals = {total}",
            "out = (totals / totals.sum() * 100).round(2).rename('percent')"
            ".sort_values(ascending=False).reset_index()",
            f"fig = px.pie(out, names={_s(g)}, values='percent', title={title})",
            f"out.set_index({_s(g)})",
        )
        return Snippet(w.code(), "(percent)")
    if qy.intent == q.TREND:
        grain = qy.grain or "month"
        moment = w.date(qy.date or "")
        w.emit(
            f'period = {moment}.dt.to_period("{_PERIOD[grain]}").astype(str).rename({_s(grain)})'
        )
        by = ["period", *(w.col(g) for g in qy.group_by)]
        group = by[0] if len(by) == 1 else "[" + ", ".join(by) + "]"
        if qy.measure:
            w.emit(
                f"out = data.groupby({group})[{_s(qy.measure)}].{qy.agg or 'mean'}().reset_index()"
            )
            y = qy.measure
        else:
            w.emit(f"out = data.groupby({group}).size().rename('rows').reset_index()")
            y = "rows"
        if qy.rank is not None:
            w.emit(f"out = {_rank('out', y, qy.rank)}")
            if qy.rank[1] == 1:
                w.emit("print(out.to_string(index=False))", f"out.iloc[0][{_s(grain)}]")
                return Snippet(w.code(), "")
            w.emit(f"out.set_index({_s(grain)})")
            return Snippet(w.code(), "")
        color = f", color={_s(qy.group_by[0])}" if qy.group_by else ""
        kind = "bar" if chart == "bar" else "line"
        index: str | list[str] = [grain, *qy.group_by] if qy.group_by else grain
        w.emit(
            f"fig = px.{kind}(out, x={_s(grain)}, y={_s(y)}{color}, title={title})",
            f"out.set_index({index!r})",
        )
        return Snippet(w.code(), "")
    if qy.intent == q.COMPARE:
        g, c = qy.group_by[0], qy.measure or ""
        w.emit(
            f"out = data[{w.col(g)}.isin({qy.groups!r})].groupby({_s(g)})[{_s(c)}]"
            f".{qy.agg}().round(4).reset_index()",
            f"fig = px.bar(out, x={_s(g)}, y={_s(c)}, title={title})",
            f"out.set_index({_s(g)})",
        )
        return Snippet(w.code(), "")
    # AGGREGATE
    fn = qy.agg or "mean"
    if fn not in _AGG_CODE:
        fn = "mean"
    c = qy.measure or ""
    if not qy.group_by:
        w.emit(w.number(f"{w.col(c)}.{fn}()"))
        return Snippet(w.code(), "")
    keys = _keys(qy.group_by)
    w.emit(f"out = data.groupby({keys}, dropna=False)[{_s(c)}].{fn}().round(4).reset_index()")
    if qy.rank is not None:
        w.emit(f"out = {_rank('out', c, qy.rank)}")
        if qy.rank[1] == 1 and len(qy.group_by) == 1:
            g = qy.group_by[0]
            w.emit("print(out.to_string(index=False))", f"out.iloc[0][{_s(g)}]")
            return Snippet(w.code(), "")
    else:
        w.emit(f"out = out.sort_values({_s(c)}, ascending=False)")
    g = qy.group_by[0]
    color = f", color={_s(qy.group_by[1])}" if len(qy.group_by) > 1 else ""
    kind = chart if chart in ("line", "pie") and not color else "bar"
    args = f"names={_s(g)}, values={_s(c)}" if kind == "pie" else f"x={_s(g)}, y={_s(c)}{color}"
    w.emit(f"fig = px.{kind}(out.head(50), {args}, title={title})", f"out.set_index({keys})")
    return Snippet(w.code(), "")


def _keys(columns: list[str]) -> str:
    """A groupby key: one column by name, several as a list."""
    return _s(columns[0]) if len(columns) == 1 else repr(list(columns))
