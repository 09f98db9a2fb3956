"""Datasets and the session workspace: loaded lazily on first use, exported as Arrow or
JSON (never pickle)."""

from __future__ import annotations

import base64
import io
import json
import mmap
import os
import sys
from collections.abc import Callable
from typing import Any

# A workspace value is kept only up to these sizes; bigger ones stay in their snippet.
MAX_FRAME_BYTES = 64 << 20
MAX_VALUE_BYTES = 1 << 20
MAX_WORKSPACE_BYTES = 128 << 20
# Frames up to this many cells are content-hashed to notice in-place changes.
HASH_CELLS = 5_000_000


def _buffer(path: str) -> Any:
    """The bytes of a file as an Arrow buffer, memory-mapped. `fd:N` is a file descriptor
    the sandbox was handed (its files are not otherwise reachable)."""
    import pyarrow as pa

    if path.startswith("fd:"):
        fd = int(path[3:])
        if os.fstat(fd).st_size == 0:
            return pa.py_buffer(b"")
        return pa.py_buffer(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
    return pa.memory_map(path, "r").read_buffer()


def read_frame(path: str, fmt: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = _buffer(path)
    if fmt == "arrow":
        table = pa.ipc.open_file(pa.BufferReader(buffer)).read_all()
    elif fmt == "parquet":
        table = pq.read_table(pa.BufferReader(buffer))
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(pa.BufferReader(buffer))
    else:
        raise ValueError(f"unknown dataset format {fmt!r}")
    return _to_pandas(table)


def _to_pandas(table: Any) -> Any:
    frame = table.to_pandas()
    index_columns = [c for c in frame.columns if isinstance(c, str) and c.startswith("__index")]
    return frame.drop(columns=index_columns) if index_columns else frame


def read_value(path: str) -> Any:
    return json.loads(bytes(_buffer(path)).decode())


def fingerprint(value: Any) -> Any:
    """Enough to tell whether a frame changed in place during the snippet."""
    pd = sys.modules.get("pandas")
    if pd is None:
        return None

    if isinstance(value, pd.Series):
        value = value.to_frame()
    if not isinstance(value, pd.DataFrame):
        return None
    shape = (value.shape, tuple(map(str, value.columns)), tuple(map(str, value.dtypes)))
    if value.size > HASH_CELLS:
        return shape
    try:
        digest = int(pd.util.hash_pandas_object(value, index=True).sum())
    except TypeError:  # unhashable cells (lists, dicts)
        digest = None
    return shape, digest


class Namespace(dict):  # type: ignore[type-arg]
    """The snippet's builtins: a dataset or workspace value is read from its file the
    first time the snippet names it (a snippet that never touches a 2 GB dataset does
    not pay for loading it)."""

    def __init__(self, base: dict[str, Any], loaders: dict[str, Callable[[], Any]]) -> None:
        super().__init__(base)
        self.loaders = loaders
        self.loaded: dict[str, tuple[Any, Any]] = {}

    def __missing__(self, name: str) -> Any:
        loader = self.loaders.get(name)
        if loader is None:
            raise KeyError(name)
        value = loader()
        self[name] = value
        self.loaded[name] = (value, fingerprint(value))
        return value


def loaders(job: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {}
    for dataset in job.get("datasets", []):
        fmt = dataset.get("format", "parquet")
        found[dataset["name"]] = lambda p=dataset["path"], f=fmt: read_frame(p, f)
    for item in job.get("workspace", []):
        if item.get("kind") == "dataframe":
            found[item["name"]] = lambda p=item["path"]: read_frame(p, "arrow")
        else:
            found[item["name"]] = lambda p=item["path"]: read_value(p)
    return found


def export(
    namespace: dict[str, Any], builtins_: Namespace, skip: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Variables the snippet created, rebound or changed in place, as workspace entries
    (DataFrames as Arrow IPC, plain values as JSON); and notes on what was not kept."""
    pd = sys.modules.get("pandas")
    frames: tuple[type, ...] = (pd.Series, pd.DataFrame) if pd is not None else ()

    candidates: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in skip:
            continue
        loaded = builtins_.loaded.get(name)
        if loaded is not None and loaded[0] is value and fingerprint(value) == loaded[1]:
            continue  # the same, unchanged object it was loaded as
        candidates[name] = value
    for name, (value, before) in builtins_.loaded.items():
        if name not in namespace and fingerprint(value) != before:
            candidates[name] = value  # changed in place (`young["flag"] = 1`)

    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    dropped: list[str] = []
    total = 0
    for name, value in candidates.items():
        if frames and isinstance(value, frames):
            entry = _frame_entry(name, value)
        elif _plain(value):
            text = json.dumps(value, allow_nan=False)
            if len(text) > MAX_VALUE_BYTES:
                notes.append(f"{name} is too large to keep between snippets.")
                continue
            entry = {"name": name, "kind": "value", "value": value, "size": len(text)}
        else:
            if not _quiet(value):
                dropped.append(f"{name} ({type(value).__name__})")
            continue
        if entry is None:
            notes.append(f"{name} is larger than {MAX_FRAME_BYTES >> 20} MB and is not kept.")
            continue
        if total + entry["size"] > MAX_WORKSPACE_BYTES:
            notes.append(f"{name} is not kept: the workspace is full for this snippet.")
            continue
        total += entry["size"]
        entries.append(entry)
    if dropped:
        notes.append(
            "Not kept for the next snippet (only DataFrames, Series and plain values are): "
            + ", ".join(dropped)
            + "."
        )
    return entries, notes


def _quiet(value: Any) -> bool:
    """Things nobody expects to persist: modules, functions, classes, figures."""
    if callable(value) or isinstance(value, type):
        return True
    module = type(value).__module__ or ""
    return module.startswith(("plotly.", "runner."))


def _frame_entry(name: str, value: Any) -> dict[str, Any] | None:
    import pandas as pd
    import pyarrow as pa

    frame = value.to_frame() if isinstance(value, pd.Series) else value
    frame = frame.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        table = pa.Table.from_pandas(frame.astype(str), preserve_index=True)
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    if len(data) > MAX_FRAME_BYTES:
        return None
    return {
        "name": name,
        "kind": "dataframe",
        "arrow": base64.b64encode(data).decode(),
        "shape": [int(frame.shape[0]), int(frame.shape[1])],
        "columns": list(frame.columns)[:200],
        "series": isinstance(value, pd.Series),
        "size": len(data),
    }


def _plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if depth > 6:
        return False
    if isinstance(value, list | tuple):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False
