"""Datasets and the session workspace: loaded lazily on first use, exported as Arrow or
JSON (never pickle)."""

from __future__ import annotations

import ast
import base64
import functools
import io
import json
import mmap
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

# A workspace value is kept only up to these sizes; bigger ones stay in their snippet.
MAX_FRAME_BYTES = 64 << 20
MAX_VALUE_BYTES = 1 << 20
MAX_WORKSPACE_BYTES = 128 << 20
# Frames up to this many cells are also content-hashed to notice in-place changes (the
# policy records writes made through assignment and pandas' inplace methods).
HASH_CELLS = 50_000
# Arrow schema metadata of a workspace file holding a Series (its name, as JSON).
SERIES_KEY = b"quarry.series"


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


def read_frame(path: str, fmt: str, columns: list[str] | None = None) -> Any:
    """A dataset as a DataFrame; with `columns`, only those (when they all exist: else
    all of them, so that a wrong name fails as it would on the whole frame)."""
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
    if columns and set(columns) <= set(table.column_names):
        index = [c for c in table.column_names if c.startswith("__index_level_")]
        table = table.select([*columns, *index])
    return _to_pandas(table)


def used_columns(code: str, names: Iterable[str]) -> dict[str, list[str]]:
    """The columns of each dataset a snippet reads, where that is certain: the name only
    ever appears as `df["a"]` or `df[["a", "b"]]`, read. Anything else (`df.groupby`,
    `df["a"] = ...`, passing `df` along) needs the whole frame. Reading a 2-column slice
    of a 50-column dataset then converts 2 columns, not 50."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return {}
    wanted = set(names)
    columns: dict[str, set[str]] = {name: set() for name in wanted}
    consumed: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and isinstance(node.value, ast.Name)
            and node.value.id in wanted
        ):
            keys = _constant_keys(node.slice)
            if keys is not None:
                columns[node.value.id].update(keys)
                consumed.add(id(node.value))
    whole = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id in wanted and id(node) not in consumed
    }
    return {name: sorted(found) for name, found in columns.items() if found and name not in whole}


def _constant_keys(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.List | ast.Tuple) and node.elts:
        keys = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        if len(keys) == len(node.elts) and all(isinstance(k, str) for k in keys):
            return keys  # type: ignore[return-value]
    return None


def _to_pandas(table: Any) -> Any:
    # (not split_blocks: columns left as views of the read-only mapping could not be
    # written to, and `df.loc[m, "x"] = 0` must work)
    frame = table.to_pandas()
    index_columns = [c for c in frame.columns if isinstance(c, str) and c.startswith("__index")]
    if index_columns:
        frame = frame.drop(columns=index_columns)
    series = (table.schema.metadata or {}).get(SERIES_KEY)
    if series is not None and frame.shape[1] == 1:
        return frame.iloc[:, 0].rename(json.loads(series))
    return frame


def read_value(path: str) -> Any:
    return json.loads(bytes(_buffer(path)).decode())


def fingerprint(value: Any) -> Any:
    """Enough to tell whether a loaded value changed in place during the snippet: plain
    values by their JSON text (at most MAX_VALUE_BYTES when loaded), frames below."""
    if isinstance(value, list | dict):
        try:
            return json.dumps(value, sort_keys=True)
        except (TypeError, ValueError):
            return None
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

    def __init__(
        self,
        base: dict[str, Any],
        loaders: dict[str, Callable[[], Any]],
        refused: dict[str, str] | None = None,
    ) -> None:
        super().__init__(base)
        self.loaders = loaders
        self.refused = refused or {}  # builtin name -> why the snippet does not have it
        self.loaded: dict[str, tuple[Any, Any]] = {}
        self.narrowed: set[str] = set()  # loaded with some of their columns only

    def __missing__(self, name: str) -> Any:
        loader = self.loaders.get(name)
        if loader is None:
            message = self.refused.get(name)
            if message is not None:
                from runner.policy import PolicyError

                raise PolicyError(message)
            raise KeyError(name)
        value = loader()
        if getattr(loader, "narrowed", False):
            self.narrowed.add(name)
        self[name] = value
        self.loaded[name] = (value, fingerprint(value))
        return value


def loaders(job: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    found: dict[str, Callable[[], Any]] = {}
    datasets = job.get("datasets", [])
    narrow = used_columns(job.get("code", ""), [d["name"] for d in datasets])
    for dataset in datasets:
        fmt = dataset.get("format", "parquet")
        columns = narrow.get(dataset["name"])
        loader = functools.partial(read_frame, dataset["path"], fmt, columns)
        loader.narrowed = columns is not None  # type: ignore[attr-defined]
        found[dataset["name"]] = loader
    for item in job.get("workspace", []):
        if item.get("kind") == "dataframe":
            found[item["name"]] = functools.partial(read_frame, item["path"], "arrow")
        else:
            found[item["name"]] = functools.partial(read_value, item["path"])
    return found


def export(
    namespace: dict[str, Any],
    builtins_: Namespace,
    skip: set[str],
    budget: int = MAX_WORKSPACE_BYTES,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Variables the snippet created, rebound or changed in place, as workspace entries
    (DataFrames as Arrow IPC, plain values as JSON), within `budget` bytes in all; and
    notes on what was not kept."""
    budget = min(budget, MAX_WORKSPACE_BYTES)
    pd = sys.modules.get("pandas")
    frames: tuple[type, ...] = (pd.Series, pd.DataFrame) if pd is not None else ()

    candidates: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in skip:
            continue
        loaded = builtins_.loaded.get(name)
        if loaded is not None and loaded[0] is value and not _changed(value, loaded[1]):
            continue  # the same, unchanged object it was loaded as
        candidates[name] = value
    for name, (value, before) in builtins_.loaded.items():
        if name in builtins_.narrowed:
            continue  # part of a dataset: never a workspace value in its place
        if name not in namespace and _changed(value, before):
            candidates[name] = value  # changed in place (`young["flag"] = 1`)

    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    dropped: list[str] = []
    total = 0
    numpy = sys.modules.get("numpy")
    for name, value in candidates.items():
        if numpy is not None and isinstance(value, numpy.generic):
            value = value.item()  # np.int64(3) -> 3: a plain value like any other
        if frames and isinstance(value, frames):
            entry = _frame_entry(name, value, min(MAX_FRAME_BYTES, budget))
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
        if entry is None or total + entry["size"] > budget:
            room = f"{budget / (1 << 20):.1f} MB".replace(".0 MB", " MB")
            notes.append(
                f"{name} is not kept for the next snippet: the workspace of one snippet "
                f"holds {room} (keep a smaller result, e.g. aggregate or select columns)."
            )
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


def _changed(value: Any, before: Any) -> bool:
    from runner.policy import WRITTEN

    return id(value) in WRITTEN or fingerprint(value) != before


def _frame_entry(name: str, value: Any, limit: int = MAX_FRAME_BYTES) -> dict[str, Any] | None:
    import pandas as pd
    import pyarrow as pa

    frame = value.to_frame() if isinstance(value, pd.Series) else value
    frame = frame.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        table = pa.Table.from_pandas(frame.astype(str), preserve_index=True)
    if isinstance(value, pd.Series):
        # the file says so itself: it comes back as a Series, under its own name
        label = value.name if _plain(value.name) else str(value.name)
        metadata = {**(table.schema.metadata or {}), SERIES_KEY: json.dumps(label).encode()}
        table = table.replace_schema_metadata(metadata)
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    if len(data) > limit:
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
