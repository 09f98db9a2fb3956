"""What a snippet shows: printed text, tables, figures and the value of its last line."""

from __future__ import annotations

import base64
import json
import math
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

MAX_TABLE_ROWS = 200
MAX_TABLE_COLUMNS = 100
MAX_CELL_CHARS = 1000
MAX_RESULT_CHARS = 10_000
MAX_POINTS_PER_FIGURE = 50_000


def jsonable(value: Any, depth: int = 0) -> Any:
    """A Python/numpy/pandas value as JSON can carry it."""
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
            return value[:MAX_CELL_CHARS] + "…"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 8:
        return repr(value)[:MAX_CELL_CHARS]
    import numpy as np

    if isinstance(value, np.generic):
        return jsonable(value.item(), depth + 1)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, bytes):
        return base64.b64encode(value[:256]).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in list(value.items())[:1000]}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in list(value)[:10_000]]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), depth + 1)
    try:
        import pandas as pd

        if value is pd.NaT or (not isinstance(value, type) and pd.isna(value) is True):
            return None
        if isinstance(value, pd.Timestamp | pd.Timedelta | pd.Period | pd.Interval):
            return str(value)
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)[:MAX_CELL_CHARS]


class Output:
    """Printed text, kept up to a byte budget; the rest is counted, not stored."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> int:
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            kept = text[:room]
            self.parts.append(kept)
            self.size += len(kept)
            self.dropped += len(text) - len(kept)
        else:
            self.dropped += len(text)
        return len(text)

    def flush(self) -> None:
        return None

    def text(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[output truncated: {self.dropped} more characters]"
        return out


class PrintFactory:
    """RestrictedPython's `_print_`: every `print` in the snippet writes to one Output."""

    def __init__(self, output: Output, getattr_: Any) -> None:
        self.output = output
        self.getattr = getattr_

    def __call__(self, _getattr_: Any = None) -> PrintFactory:
        return self

    def _call_print(self, *objects: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is None:
            kwargs["file"] = self.output
        else:
            self.getattr(kwargs["file"], "write")
        print(*objects, **kwargs)


def table(name: str, value: Any, max_rows: int = MAX_TABLE_ROWS) -> dict[str, Any] | None:
    pd = sys.modules.get("pandas")
    if pd is None:  # nothing imported pandas: there is no table to show
        return None

    if isinstance(value, pd.Series):
        value = value.to_frame(name=str(value.name) if value.name is not None else "value")
    if not isinstance(value, pd.DataFrame):
        return None
    frame = value
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0:
        frame = frame.reset_index()
    total = len(frame)
    columns = [str(c) for c in frame.columns[:MAX_TABLE_COLUMNS]]
    head = frame.iloc[:max_rows, :MAX_TABLE_COLUMNS]
    rows = [[jsonable(v) for v in row] for row in head.itertuples(index=False, name=None)]
    return {
        "name": name,
        "columns": columns,
        "rows": rows,
        "truncated": total > max_rows or frame.shape[1] > MAX_TABLE_COLUMNS,
        "total_rows": total,
        "total_columns": int(frame.shape[1]),
    }


_INSTALLED: list[Any] = []


class Figures:
    """Every Plotly figure the snippet creates, in creation order. (Each plotly.express
    call builds exactly one figure; a figure built twice from the same data counts twice,
    which is what the snippet asked for.)"""

    def __init__(self, limit: int = 20) -> None:
        self.created: list[Any] = []
        self.limit = limit

    def install(self) -> None:
        """Record figures from now on; if plotly is not loaded yet, as soon as it is."""
        if "plotly.basedatatypes" not in sys.modules:
            from runner import policy

            def later(name: str) -> None:
                if name.split(".", 1)[0] == "plotly" and self not in _INSTALLED:
                    self.install()

            policy.IMPORT_HOOKS[:] = [later]
            return
        _INSTALLED[:] = [self]
        from plotly.basedatatypes import BaseFigure

        BaseFigure.quarry_registry = self  # type: ignore[attr-defined]
        if getattr(BaseFigure.__init__, "quarry_patched", False):
            return
        original = BaseFigure.__init__

        def init(fig: Any, *args: Any, **kwargs: Any) -> None:
            original(fig, *args, **kwargs)
            registry = getattr(BaseFigure, "quarry_registry", None)
            if registry is not None:
                registry.created.append(fig)

        init.quarry_patched = True  # type: ignore[attr-defined]
        BaseFigure.__init__ = init  # type: ignore[method-assign]

    def collect(self) -> tuple[list[Any], list[str]]:
        unique: dict[int, Any] = {}
        for fig in self.created:
            unique.setdefault(id(fig), fig)
        figures = list(unique.values())
        notes = []
        if len(figures) > self.limit:
            notes.append(f"{len(figures)} figures were made; the first {self.limit} are kept.")
            figures = figures[: self.limit]
        return figures, notes


def figure_json(fig: Any) -> tuple[str, str | None]:
    """A figure as Plotly JSON text, kept to a point budget: a histogram of many values
    is binned here (exact counts, a few hundred numbers instead of every value); other
    large traces keep every k-th point, and the note says so."""
    note = None
    if _points(fig) > MAX_POINTS_PER_FIGURE:
        fig, note = _lighter(fig)
    return fig.to_json(validate=False, remove_uids=True), note


def _length(values: Any) -> int:
    return len(values) if values is not None and hasattr(values, "__len__") else 0


def _points(fig: Any) -> int:
    return sum(
        max(_length(getattr(trace, key, None)) for key in _ARRAY_KEYS if key in trace)
        if any(key in trace for key in _ARRAY_KEYS)
        else 0
        for trace in fig.data
    )


_ARRAY_KEYS = ("x", "y", "z", "values", "lat", "lon", "text", "customdata")


def _lighter(fig: Any) -> tuple[Any, str]:
    import numpy as np
    import plotly.graph_objects as go

    before = _points(fig)
    data = []
    thinned = False
    for trace in fig.data:
        binned = _binned(trace, np, go) if trace.type == "histogram" else None
        if binned is not None:
            data.append(binned)
            continue
        as_dict = trace.to_plotly_json()
        longest = max((_length(v) for k, v in as_dict.items() if k in _ARRAY_KEYS), default=0)
        step = math.ceil(longest / MAX_POINTS_PER_FIGURE * max(len(fig.data), 1))
        if step > 1:
            thinned = True
            for key in _ARRAY_KEYS:
                if _length(as_dict.get(key)) == longest:
                    as_dict[key] = as_dict[key][::step]
        data.append(as_dict)
    light = go.Figure(data=data, layout=fig.layout)
    note = f"The figure had {before} points: histograms were binned before sending"
    if thinned:
        note += ", and other traces keep an evenly spaced sample"
    return light, note + "."


def _binned(trace: Any, np: Any, go: Any) -> Any:
    """A plain count histogram as the bars it would draw."""
    if trace.histfunc not in (None, "count") or trace.histnorm or trace.y is not None:
        return None
    values = trace.x
    if values is None:
        return None
    array = np.asarray(values)
    if array.dtype.kind in "iufb":
        array = array[~np.isnan(array.astype(float))]
        bins = trace.nbinsx or "auto"
        counts, edges = np.histogram(array, bins=bins if bins == "auto" else int(bins))
        centers = (edges[:-1] + edges[1:]) / 2
        return go.Bar(
            x=centers,
            y=counts,
            width=np.diff(edges),
            name=trace.name,
            marker=trace.marker,
            showlegend=trace.showlegend,
            legendgroup=trace.legendgroup,
            offsetgroup=trace.offsetgroup,
        )
    labels, counts = np.unique(array.astype(str), return_counts=True)
    return go.Bar(x=labels, y=counts, name=trace.name, marker=trace.marker)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
