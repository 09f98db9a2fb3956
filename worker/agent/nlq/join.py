"""Two datasets in one question: joined on a column they share.

A question whose columns come from two datasets ("average price by weather", where only
`stocks` has `price` and only `seattle-weather` has `weather`), or that names two datasets,
reads one table: the two joined on the column they share (inner join: the rows whose key is
in both). The key is the shared column the question names, else the only one they share;
otherwise the question is asked back. A column both datasets have (other than the key) is
called `name (dataset)` in the joined table, and the question must say which it means:
"temp of sf-temps", "temp in sf-temps", "sf-temps temp", "sf-temps's temp".
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from worker.agent.nlq.schema import DATE, INDEX, Table


class JoinError(Exception):
    """Why two datasets cannot be joined for this question (said to the user)."""


def shared_keys(a: Table, b: Table) -> list[str]:
    """Columns both tables have, holding the same kind of values (never a saved index)."""
    out = []
    for column in a.columns:
        other = b.column(column.name)
        if other is not None and column.kind == other.kind and column.kind != INDEX:
            out.append(column.name)
    return out


def pick_key(a: Table, b: Table, named: list[str], qualified: set[str], on: list[str]) -> str:
    """The key: the shared column said after "on"/"using", else the one shared column the
    question names (not as "X of <dataset>": that is a column of one side), else the only
    shared column, or the only one not holding decimals (a measure, not a key)."""
    keys = [k for k in shared_keys(a, b) if k not in qualified]
    for choice in (
        [k for k in dict.fromkeys(on) if k in keys],
        [k for k in dict.fromkeys(named) if k in keys],
        keys,
        [k for k in keys if not _decimal(a, k)],
    ):
        if len(choice) == 1:
            return choice[0]
    if not keys:
        return _no_key(a, b)
    raise JoinError(
        f"{a.name} and {b.name} share {', '.join(keys)}: say which one joins them "
        f"(e.g. “join on {keys[0]}”)"
    )


def _decimal(table: Table, name: str) -> bool:
    column = table.column(name)
    return column is not None and any(t in column.dtype for t in ("float", "double", "decimal"))


def _no_key(a: Table, b: Table) -> str:
    clash = [c.name for c in a.columns if b.column(c.name) is not None]
    if clash:
        raise JoinError(
            f"{a.name} and {b.name} both have {', '.join(clash)}, but not with the same kind "
            "of values, so I cannot join them on it"
        )
    raise JoinError(f"{a.name} and {b.name} share no column to join them on")


def qualified(name: str, table: Table) -> str:
    """A column both datasets have, in the joined table: `temp (sf-temps)`."""
    return f"{name} ({table.name})"


def joined(a: Table, b: Table, key: str) -> Table:
    """The joined table as questions see it; `source` is the code that makes it."""
    columns = []
    for first, second in ((a, b), (b, a)):
        for column in first.columns:
            if column.name == key:
                if first is a:
                    columns.append(column)
            elif second.column(column.name) is not None:
                columns.append(replace(column, name=qualified(column.name, first)))
            else:
                columns.append(column)
    return replace(
        a,
        name=f"{a.name} joined with {b.name}",
        rows=None,
        columns=columns,
        source=_code(a, b, key),
    )


def _code(a: Table, b: Table, key: str) -> tuple[str, ...]:
    """`data` = the inner join of the two datasets on `key` (dates parsed on both sides
    when either side keeps them as text)."""
    left, right = a.variable, b.variable
    lines = []
    key_a, key_b = a.column(key), b.column(key)
    as_text = (
        key_a is not None and key_b is not None and (key_a.stored_as_text or key_b.stored_as_text)
    )
    if as_text and key_a is not None and key_a.kind == DATE:
        parse = 'errors="coerce", format="mixed"'
        lines += [
            f"left = {left}.copy()",
            f"left[{_s(key)}] = pd.to_datetime(left[{_s(key)}], {parse})",
            f"right = {right}.copy()",
            f"right[{_s(key)}] = pd.to_datetime(right[{_s(key)}], {parse})",
        ]
        left, right = "left", "right"
    suffixes = f"({_s(' (' + a.name + ')')}, {_s(' (' + b.name + ')')})"
    lines.append(f"data = {left}.merge({right}, on={_s(key)}, how='inner', suffixes={suffixes})")
    return tuple(lines)


def _s(text: str) -> str:
    return json.dumps(text)


def spec(a: Table, b: Table, key: str) -> dict[str, Any]:
    """What a `Query` keeps of a join (see `Query.join`)."""
    return {"table": b.variable, "on": key, "left": a.name, "right": b.name}


def rebuild(tables: list[Table], variable: str, join: dict[str, Any] | None) -> Table:
    """The table a kept query was planned on: one of the session's, or two joined."""
    a = next(t for t in tables if t.variable == variable)
    if not join:
        return a
    b = next(t for t in tables if t.variable == join["table"])
    return joined(a, b, str(join["on"]))


def idle_sides(tables: list[Table], query: Any, used: set[str]) -> list[str]:
    """The names of the joined datasets none of whose columns (but the key) the plan uses:
    a join that one side does not feed answers a different question."""
    join = query.join or {}
    a = next(t for t in tables if t.variable == query.table)
    b = next(t for t in tables if t.variable == join.get("table"))
    key = join.get("on")
    if not used - {key}:
        return []  # about the joined rows as a whole ("how many rows do they share")
    idle = []
    for side, other in ((a, b), (b, a)):
        names = {
            qualified(c.name, side) if other.column(c.name) is not None else c.name
            for c in side.columns
            if c.name != key
        }
        if not names & used:
            idle.append(side.name)
    return idle
