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
    pandas = sys.modules.get("pandas")
    if pandas is not None and value is pandas.NaT:  # a datetime subclass: test it first
        return None
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


# The Figures of the run in progress; BaseFigure.__init__ reports to it once patched.
_current: list[Any] = []
_hooked = False


def _patch_plotly() -> None:
    from plotly.basedatatypes import BaseFigure

    if getattr(BaseFigure.__init__, "quarry_patched", False):
        return
    original = BaseFigure.__init__

    def init(fig: Any, *args: Any, **kwargs: Any) -> None:
        original(fig, *args, **kwargs)
        if _current:
            _current[0].created.append(fig)

    init.quarry_patched = True  # type: ignore[attr-defined]
    BaseFigure.__init__ = init


def _on_import(name: str) -> None:
    """The snippet imported something: if plotly, patch it before a figure is made
    (plotly loads its figure classes lazily, so importing plotly itself is not enough)."""
    if name.split(".", 1)[0] == "plotly":
        import importlib

        importlib.import_module("plotly.basedatatypes")
        _patch_plotly()


class Figures:
    """Every Plotly figure the snippet creates, in creation order. (Each plotly.express
    call builds exactly one figure; a figure built twice from the same data counts twice,
    which is what the snippet asked for.)"""

    def __init__(self, limit: int = 20) -> None:
        self.created: list[Any] = []
        self.limit = limit

    def install(self) -> None:
        """Record figures from now on (this run's, not an earlier one's); if plotly is
        not loaded yet, as soon as the snippet imports it."""
        global _hooked
        _current[:] = [self]
        if "plotly.basedatatypes" in sys.modules:
            _patch_plotly()
        elif not _hooked:
            from runner import policy

            policy.IMPORT_HOOKS.append(_on_import)
            _hooked = True

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
    """A figure as Plotly JSON text, kept to a point budget: histograms of many values are
    binned here (exact counts: a few hundred numbers instead of every value); other large
    traces keep an evenly spaced sample, and the note says so."""
    if _points(fig) <= MAX_POINTS_PER_FIGURE:
        return _plotly_json(fig.to_json, validate=False, remove_uids=True), None
    return _lighter(fig)


def _plotly_json(encode: Any, *args: Any, **options: Any) -> str:
    """Plotly's JSON encoding; orjson (its fast engine) refuses text that is not valid
    Unicode (a lone surrogate), the standard encoder escapes it, and the worker replaces
    the escaped character (and says so in the result's notes)."""
    try:
        return str(encode(*args, **options))
    except TypeError as exc:
        if "surrogates" not in str(exc):
            raise
        return str(encode(*args, engine="json", **options))


_ARRAY_KEYS = ("x", "y", "z", "values", "lat", "lon", "text", "customdata", "ids")


def _length(values: Any) -> int:
    return len(values) if values is not None and hasattr(values, "__len__") else 0


def _points(fig: Any) -> int:
    total = 0
    for trace in fig.data:
        total += max((_length(trace[key]) for key in _ARRAY_KEYS if key in trace), default=0)
    return total


def _arrays(trace: Any) -> dict[str, Any]:
    """A trace's data arrays as Python/numpy values (`to_plotly_json` would give them
    base64-encoded)."""
    found = {}
    for key in _ARRAY_KEYS:
        if key in trace and trace[key] is not None and _length(trace[key]) > 0:
            found[key] = trace[key]
    return found


def _lighter(fig: Any) -> tuple[str, str]:
    """Rewrite the figure's JSON form: building a new Figure would validate every value
    again (slow, and strict about compound properties). A histogram's own arrays are
    never serialised: its bars replace it."""
    import numpy as np
    from plotly.io.json import to_json_plotly

    arrays = [_arrays(trace) for trace in fig.data]
    before = sum(max((_length(v) for v in a.values()), default=0) for a in arrays)
    axes = {i: _histogram_axes(trace, arrays[i]) for i, trace in enumerate(fig.data)}
    bins = {}
    for axis in ("x", "y"):
        numeric = [i for i, a in axes.items() if a and a[0] == axis and _numeric(arrays[i][axis])]
        bins[axis] = _shared_bins(fig.data, arrays, numeric, axis)
    spec: dict[str, Any] = {"data": [], "layout": fig.layout.to_plotly_json()}
    if fig.frames:
        spec["frames"] = [frame.to_plotly_json() for frame in fig.frames]
    budget = max(1, MAX_POINTS_PER_FIGURE // max(len(arrays), 1))
    thinned = binned = False
    for index, (trace, trace_arrays) in enumerate(zip(fig.data, arrays, strict=True)):
        found = axes[index]
        bars = _bars(trace, trace_arrays, found, bins, np) if found is not None else None
        if bars is not None:
            binned = True
            spec["data"].append(bars)
            continue
        trace_spec = trace.to_plotly_json()
        longest = max((_length(v) for v in trace_arrays.values()), default=0)
        step = math.ceil(longest / budget)
        if step > 1:
            thinned = True
            for key, values in trace_arrays.items():
                if _length(values) == longest:
                    trace_spec[key] = np.asarray(values)[::step]
        spec["data"].append(trace_spec)
    done = []
    if binned:
        done.append("its histograms were binned before sending")
    if thinned:
        done.append("its large traces keep an evenly spaced sample")
    note = f"The figure had {before} points: " + " and ".join(done) + "."
    return _plotly_json(to_json_plotly, spec), note


_HISTFUNCS = {"count", "sum", "avg", "min", "max"}
MAX_BINS = 500


def _histogram_axes(trace: Any, arrays: dict[str, Any]) -> tuple[str, str | None] | None:
    """(the binned axis, the axis of the values aggregated or None) of a histogram trace
    Quarry can bin exactly as Plotly would; None for anything else."""
    if trace.type != "histogram" or (trace.histfunc or "count") not in _HISTFUNCS:
        return None
    if "x" in arrays and "y" in arrays:
        binned = "y" if trace.orientation == "h" else "x"
        return binned, "x" if binned == "y" else "y"
    for axis in ("x", "y"):
        if axis in arrays:
            return axis, None
    return None


def _numeric(values: Any) -> bool:
    kind = getattr(values, "dtype", None)
    return kind is not None and kind.kind in "iuf"


def _shared_bins(
    traces: Any, arrays: list[dict[str, Any]], numeric: list[int], axis: str
) -> tuple[float, float, int] | None:
    """(start, width, count) of one set of equal bins for every numeric histogram along
    an axis, so that the groups of a colored histogram line up: the trace's own bin size
    or count when it sets one, else numpy's "auto" rule (the wider of Sturges' and
    Freedman-Diaconis', the quartiles estimated on a sample)."""
    import numpy as np

    if not numeric:
        return None
    merged = np.concatenate([np.asarray(arrays[i][axis], dtype=float) for i in numeric])
    merged = merged[np.isfinite(merged)]
    if merged.size == 0:
        return None
    low, high = float(merged.min()), float(merged.max())
    span = high - low
    if span == 0:
        return low - 0.5, 1.0, 1
    first = traces[numeric[0]]
    settings = getattr(first, f"{axis}bins")
    size, start = settings.size, settings.start
    if isinstance(size, int | float) and 0 < span / size <= MAX_BINS:
        begin = float(start) if isinstance(start, int | float) and start <= low else low
        return begin, float(size), max(1, math.ceil((high - begin) / size))
    wanted = getattr(first, f"nbins{axis}")
    if not wanted:
        sample = merged[:: max(1, merged.size // 20_000)]
        quartiles = np.percentile(sample, [25, 75])
        sturges = span / (math.log2(merged.size) + 1)
        freedman = 2 * float(quartiles[1] - quartiles[0]) / merged.size ** (1 / 3)
        width = min(sturges, freedman) if freedman > 0 else sturges
        wanted = math.ceil(span / width)
    count = max(1, min(int(wanted), MAX_BINS))
    return low, span / count, count


_BAR_KEEPS = (
    "name",
    "marker",
    "legendgroup",
    "showlegend",
    "offsetgroup",
    "alignmentgroup",
    "xaxis",
    "yaxis",
    "opacity",
    "hovertemplate",
)


def _bars(
    trace: Any,
    arrays: dict[str, Any],
    axes: tuple[str, str | None],
    bins: dict[str, tuple[float, float, int] | None],
    np: Any,
) -> dict[str, Any] | None:
    """A histogram as the bars Plotly would draw: the same bins (numbers) or categories
    (anything else, in order of appearance), the same function and normalisation."""
    import pandas as pd

    axis, other = axes
    func = trace.histfunc or "count"
    values = np.asarray(arrays[axis])
    weights = np.asarray(arrays[other], dtype=float) if other and func != "count" else None
    if _numeric(values):
        found = bins.get(axis)
        if found is None:
            return None
        start, width, count = found
        numbers = values.astype(float)
        keep = np.isfinite(numbers)  # every one lies in the bins (they start at the min)
        index = np.clip(((numbers[keep] - start) / width).astype(np.intp), 0, count - 1)
        labels: Any = np.arange(count)
        positions: Any = start + width * (labels + 0.5)
        widths: Any = np.full(count, width)
    else:
        keep = ~pd.isna(values)
        codes, uniques = pd.factorize(pd.Series(values[keep]).astype(str))
        index, count = codes, len(uniques)
        positions = np.asarray(uniques, dtype=object)
        widths = None
    if weights is None:
        totals = np.bincount(index, minlength=count).astype(float)
    elif func == "sum":
        totals = np.bincount(index, weights=weights[keep], minlength=count)
    elif func == "avg":
        sums = np.bincount(index, weights=weights[keep], minlength=count)
        counts = np.bincount(index, minlength=count)
        with np.errstate(invalid="ignore", divide="ignore"):
            totals = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    else:
        grouped = pd.Series(weights[keep]).groupby(index).agg(func)
        totals = grouped.reindex(range(count)).to_numpy(dtype=float)
    cumulative = trace.cumulative
    if cumulative is not None and cumulative.enabled:
        filled = np.nan_to_num(totals)
        decreasing = cumulative.direction == "decreasing"
        totals = np.cumsum(filled[::-1])[::-1] if decreasing else np.cumsum(filled)
    norm = trace.histnorm or ""
    whole = np.nansum(totals)
    if "probability" in norm and whole:
        totals = totals / whole
    elif norm == "percent" and whole:
        totals = totals * 100 / whole
    if "density" in norm and widths is not None:
        totals = totals / widths
    bar: dict[str, Any] = {"type": "bar"}
    for key in _BAR_KEEPS:
        value = trace[key]
        if hasattr(value, "to_plotly_json"):
            value = value.to_plotly_json() or None
        if value is not None:
            bar[key] = value
    bar[axis] = positions
    bar["y" if axis == "x" else "x"] = [v if math.isfinite(v) else None for v in totals.tolist()]
    if axis == "y":
        bar["orientation"] = "h"
    if widths is not None:
        bar["width"] = widths
    return bar


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
