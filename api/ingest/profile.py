"""The profile a converted table gets: per column its kind, missing values, distinct count,
range, moments and most frequent values (a text column keeps up to KEPT_VALUES of its own
for the offline model), computed batch by batch while the converter writes; and JSON-safe
values.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

DISTINCT_CAP = 10_000
TOP_VALUES = 5
# The values of a text column kept in its profile (most frequent first), so that the
# offline model recognises them in a question ("Japan" is a value of `Origin`); never sent
# to an external model (worker/agent/context.py).
KEPT_VALUES, KEPT_VALUES_CHARS = 500, 20_000
SAMPLE_ROWS = 5


# --- JSON-safe values ---------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A value as JSON can carry it (profiles, previews, samples)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, bytes):
        return base64.b64encode(value[:64]).decode() + ("..." if len(value) > 64 else "")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


# --- profile ------------------------------------------------------------------------------------


def kind_of(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    if pa.types.is_timestamp(dtype):
        return "datetime"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_time(dtype):
        return "time"
    if pa.types.is_duration(dtype):
        return "duration"
    if pa.types.is_null(dtype):
        return "empty"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "binary"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return "list"
    if pa.types.is_struct(dtype):
        return "struct"
    return "other"


@dataclass
class ColumnStats:
    name: str
    dtype: pa.DataType
    nulls: int = 0
    count: int = 0
    minimum: Any = None
    maximum: Any = None
    mean: float | None = None
    m2: float = 0.0  # sum of squared deviations (Chan et al.'s parallel variance)
    numeric_n: int = 0
    counts: dict[Any, int] | None = field(default_factory=dict)
    min_length: int | None = None
    max_length: int | None = None

    @property
    def kind(self) -> str:
        return kind_of(self.dtype)

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        self.count += len(column)
        self.nulls += column.null_count
        kind = self.kind
        if kind in {"list", "struct", "binary", "other", "empty"}:
            self.counts = None
            return
        values = column
        if pa.types.is_floating(self.dtype):
            nan = pc.is_nan(column)
            self.nulls += pc.sum(nan).as_py() or 0
            values = pc.filter(column, pc.invert(pc.fill_null(nan, True)))
        if len(values) - values.null_count == 0:
            return
        if kind in {"integer", "float", "datetime", "date", "time", "duration"}:
            bounds = pc.min_max(values)
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            self.minimum = lo if self.minimum is None else min(self.minimum, lo)
            self.maximum = hi if self.maximum is None else max(self.maximum, hi)
        if kind in {"integer", "float"}:
            self._merge_moments(values)
        if kind == "string":
            lengths = pc.min_max(pc.utf8_length(values))
            lo, hi = lengths["min"].as_py(), lengths["max"].as_py()
            self.min_length = lo if self.min_length is None else min(self.min_length, lo)
            self.max_length = hi if self.max_length is None else max(self.max_length, hi)
        self._merge_counts(values)

    def _merge_moments(self, values: pa.Array | pa.ChunkedArray) -> None:
        as_float = pc.cast(values, pa.float64())
        n = len(as_float) - as_float.null_count
        mean = pc.mean(as_float).as_py()
        var = pc.variance(as_float, ddof=0).as_py() or 0.0
        if mean is None or not math.isfinite(mean):
            return
        if self.mean is None:
            self.mean, self.m2, self.numeric_n = mean, var * n, n
            return
        total = self.numeric_n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += var * n + delta * delta * self.numeric_n * n / total
        self.numeric_n = total

    def _merge_counts(self, values: pa.Array | pa.ChunkedArray) -> None:
        if self.counts is None:
            return
        vc = pc.value_counts(values)
        if len(vc) + len(self.counts) > DISTINCT_CAP * 2:
            self.counts = None  # too many distinct values to count exactly: stop trying
            return
        for value, n in zip(
            vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
        ):
            if value is not None:
                self.counts[value] = self.counts.get(value, 0) + n
        if len(self.counts) > DISTINCT_CAP:
            self.counts = None

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dtype": str(self.dtype),
            "kind": self.kind,
            "nulls": self.nulls,
            "null_fraction": round(self.nulls / self.count, 4) if self.count else 0.0,
        }
        if self.counts is not None:
            out["distinct"] = len(self.counts)
            if self.kind in {"string", "boolean"} or len(self.counts) <= 50:
                top = sorted(self.counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
                out["top_values"] = [
                    {"value": jsonable(v), "count": n} for v, n in top[:TOP_VALUES]
                ]
                if self.kind == "string":
                    out["values"] = _kept_values([str(v) for v, _ in top])
        elif self.kind not in {"list", "struct", "binary", "other", "empty"}:
            out["distinct"] = None
            out["distinct_at_least"] = DISTINCT_CAP
        if self.minimum is not None:
            out["min"], out["max"] = jsonable(self.minimum), jsonable(self.maximum)
        if self.mean is not None:
            out["mean"] = jsonable(self.mean)
            if self.numeric_n > 1:
                out["std"] = jsonable(math.sqrt(self.m2 / (self.numeric_n - 1)))
        if self.min_length is not None:
            out["min_length"], out["max_length"] = self.min_length, self.max_length
        return out


def _kept_values(values: list[str]) -> list[str]:
    kept, size = [], 0
    for value in values[:KEPT_VALUES]:
        size += len(value)
        if size > KEPT_VALUES_CHARS:
            break
        kept.append(value)
    return kept


class Profiler:
    def __init__(self, schema: pa.Schema) -> None:
        self.columns = [ColumnStats(f.name, f.type) for f in schema]
        self.rows = 0
        self.sample: list[dict[str, Any]] = []

    def update(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if len(self.sample) < SAMPLE_ROWS:
            head = batch.slice(0, SAMPLE_ROWS - len(self.sample)).to_pylist()
            self.sample.extend({k: jsonable(v) for k, v in row.items()} for row in head)
        for stats, column in zip(self.columns, batch.columns, strict=True):
            stats.update(column)

    def result(self, extra: dict[str, Any]) -> dict[str, Any]:
        columns = [c.result() for c in self.columns]
        if columns and _saved_index(columns[0], self.rows):
            columns[0]["index"] = True
            saved = SAVED_INDEX.format(name=columns[0]["name"], last=self.rows - 1)
            extra = {**extra, "notes": [*extra.get("notes", []), saved]}
        return {"rows": self.rows, "columns": columns, "sample_rows": self.sample, **extra}


SAVED_INDEX = (
    "The first column, {name!r}, holds 0 to {last}: a row number saved with the data (as "
    "pandas' to_csv writes it), not a measurement; analyses leave it out unless asked."
)
_INDEX_NAMES = frozenset({"Unnamed: 0", "column_1", "index", ""})


def _saved_index(column: dict[str, Any], rows: int) -> bool:
    """A first column named like pandas' unnamed index (or not named) holding 0..n-1."""
    return (
        column["name"] in _INDEX_NAMES
        and column["kind"] == "integer"
        and column.get("nulls") == 0
        and column.get("min") == 0
        and column.get("max") == rows - 1
        and column.get("distinct") in (rows, None)
        and rows > 1
    )
