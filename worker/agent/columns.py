"""Check a snippet's column references against the schema before it runs.

`df["x"]`, `df[["x", "y"]]`, `df.x`, `df.groupby("x")`, `df.sort_values("x")`... on a
dataset variable are compared with that dataset's columns; an unknown name goes back to the
model with "did you mean" suggestions instead of costing a sandbox run. Conservative on
purpose: a snippet that creates or renames columns, or rebinds the variable, is not checked
for that variable (the schema no longer says what it holds).
"""

from __future__ import annotations

import ast
import difflib
import functools
from typing import Any

# DataFrame methods whose first argument / `by` / `subset` / `columns` names columns
_COLUMN_METHODS = {
    "groupby": ("by",),
    "sort_values": ("by",),
    "value_counts": ("subset",),
    "drop_duplicates": ("subset",),
    "dropna": ("subset",),
    "nlargest": ("columns",),
    "nsmallest": ("columns",),
    "set_index": ("keys",),
    "pivot_table": ("values", "index", "columns"),
}
# ... and these change which columns exist: do not check that variable after them
_RESHAPING = {
    "assign",
    "rename",
    "merge",
    "join",
    "pivot",
    "pivot_table",
    "melt",
    "stack",
    "unstack",
    "reset_index",
    "set_index",
    "concat",
    "explode",
    "transpose",
    "T",
    "add_prefix",
    "add_suffix",
    "insert",
    "eval",
    "apply",
    "agg",
    "aggregate",
    "get_dummies",
    "columns",
}


@functools.cache
def _frame_attributes() -> frozenset[str]:
    import pandas as pd

    return frozenset(dir(pd.DataFrame))


def _names(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.List | ast.Tuple):
        found: list[str] = []
        for element in node.elts:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                found.append(element.value)
        return found
    return None


def references(code: str, variables: set[str]) -> dict[str, set[str]] | None:
    """Column names the snippet reads from each variable (None when it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    skip: set[str] = set()
    created: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Store | ast.Del)
            and node.id in variables
        ):
            skip.add(node.id)  # rebound: it may not be the dataset any more
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            created.update(_names(node.slice) or [])
        if isinstance(node, ast.Attribute) and node.attr in _RESHAPING:
            base = node.value
            if isinstance(base, ast.Name) and base.id in variables:
                skip.add(base.id)
    found: dict[str, set[str]] = {}
    frame_attributes = _frame_attributes()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            base = node.value
            if isinstance(base, ast.Name) and base.id in variables:
                found.setdefault(base.id, set()).update(_names(node.slice) or [])
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            base = node.value
            if (
                isinstance(base, ast.Name)
                and base.id in variables
                and node.attr not in frame_attributes
                and not node.attr.startswith("_")
            ):
                found.setdefault(base.id, set()).add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            method = node.func.attr
            if not (
                isinstance(base, ast.Name) and base.id in variables and method in _COLUMN_METHODS
            ):
                continue
            arguments: list[ast.expr] = list(node.args[:1])
            arguments += [k.value for k in node.keywords if k.arg in _COLUMN_METHODS[method]]
            for argument in arguments:
                found.setdefault(base.id, set()).update(_names(argument) or [])
    return {
        var: names - created for var, names in found.items() if var not in skip and names - created
    }


def suggestions(name: str, columns: list[str]) -> list[str]:
    by_lower = {c.lower(): c for c in columns}
    if name.lower() in by_lower:
        return [by_lower[name.lower()]]
    squashed = {c.lower().replace("_", "").replace(" ", ""): c for c in columns}
    key = name.lower().replace("_", "").replace(" ", "")
    if key in squashed:
        return [squashed[key]]
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    lowered = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    merged = close + [by_lower[x] for x in lowered if by_lower[x] not in close]
    return merged[:3]


def check(code: str, frames: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Unknown columns: [{"variable", "column", "suggestions"}] (empty when all is well)."""
    found = references(code, set(frames))
    if not found:
        return []
    problems = []
    for variable, names in sorted(found.items()):
        columns = frames[variable]
        if not columns:
            continue
        for name in sorted(names):
            if name not in columns:
                problems.append(
                    {
                        "variable": variable,
                        "column": name,
                        "suggestions": suggestions(name, columns),
                    }
                )
    return problems


def message(problems: list[dict[str, Any]], frames: dict[str, list[str]]) -> str:
    lines = ["The snippet was not run: it uses columns that do not exist."]
    for p in problems:
        hint = (
            f" Did you mean {', '.join(repr(s) for s in p['suggestions'])}?"
            if p["suggestions"]
            else ""
        )
        lines.append(
            f"- {p['variable']}[{p['column']!r}] is not a column of {p['variable']}.{hint}"
        )
    for variable in sorted({p["variable"] for p in problems}):
        columns = frames[variable]
        shown = ", ".join(map(repr, columns[:60])) + (" ..." if len(columns) > 60 else "")
        lines.append(f"Columns of {variable}: {shown}")
    lines.append("Fix the column names and run it again.")
    return "\n".join(lines)
