"""The session workspace: what a snippet leaves at top level (DataFrames as Arrow IPC,
plain values as JSON; never pickle), kept per session on the data volume and handed,
read-only, to the next snippet of the same session (DESIGN.md, "Runner job and result").

    DATA_DIR/workspaces/<user>/<session>/<name>.arrow | <name>.json   + index.json

The index says what each name holds (kind, shape, columns) so that the agent can be told
without reading the data. Names come from the snippet: only identifiers are accepted, so a
name can never be a path.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

from api.storage import remove_tree, workspace_dir

MAX_NAMES = 50  # per session: the oldest beyond this are dropped


def folder(data_dir: Path, user_id: uuid.UUID, session_id: uuid.UUID) -> Path:
    return workspace_dir(data_dir, user_id, session_id)


def _valid(name: object) -> bool:
    return isinstance(name, str) and name.isidentifier() and not name.startswith("_")


def read_index(base: Path) -> dict[str, dict[str, Any]]:
    try:
        index = json.loads((base / "index.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in index.items() if _valid(k) and isinstance(v, dict)}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def store(base: Path, entries: list[dict[str, Any]], sequence: int) -> list[dict[str, Any]]:
    """Keep the entries of one result; returns what was kept (name, kind, shape...)."""
    if not entries:
        return []
    base.mkdir(parents=True, exist_ok=True)
    index = read_index(base)
    kept: list[dict[str, Any]] = []
    for entry in entries:
        name = entry.get("name")
        if not isinstance(name, str) or not _valid(name):
            continue
        kind = entry.get("kind")
        if kind == "dataframe" and isinstance(entry.get("arrow"), str):
            try:
                data = base64.b64decode(entry["arrow"], validate=True)
            except ValueError:
                continue
            _write_atomic(base / f"{name}.arrow", data)
            (base / f"{name}.json").unlink(missing_ok=True)
            info = {
                "kind": "dataframe",
                "shape": entry.get("shape"),
                "columns": (entry.get("columns") or [])[:50],
                "series": bool(entry.get("series")),
            }
        elif kind == "value":
            text = json.dumps(entry.get("value"), allow_nan=False)
            _write_atomic(base / f"{name}.json", text.encode())
            (base / f"{name}.arrow").unlink(missing_ok=True)
            info = {"kind": "value", "preview": text[:200]}
        else:
            continue
        info["seq"] = sequence
        index[name] = info
        kept.append({"name": name, **info})
    if len(index) > MAX_NAMES:  # the least recently written go first
        for name, _ in sorted(index.items(), key=lambda kv: kv[1].get("seq", 0))[
            : len(index) - MAX_NAMES
        ]:
            index.pop(name)
            for suffix in (".arrow", ".json"):
                (base / f"{name}{suffix}").unlink(missing_ok=True)
    _write_atomic(base / "index.json", json.dumps(index).encode())
    return kept


def job_entries(base: Path) -> list[dict[str, Any]]:
    """The workspace part of a runner job: every kept name with the file that holds it."""
    found = []
    for name, info in read_index(base).items():
        kind = info.get("kind")
        path = base / (f"{name}.arrow" if kind == "dataframe" else f"{name}.json")
        if path.is_file():
            found.append({"name": name, "path": str(path), "kind": kind})
    return found


def describe(base: Path) -> list[str]:
    """One line per kept name, for the agent's prompt."""
    lines = []
    for name, info in sorted(read_index(base).items()):
        if info.get("kind") == "dataframe":
            shape = info.get("shape") or ["?", "?"]
            what = "Series" if info.get("series") else "DataFrame"
            columns = ", ".join(map(str, info.get("columns") or []))
            lines.append(f"{name}: {what} {shape[0]} rows x {shape[1]} columns ({columns})")
        else:
            lines.append(f"{name} = {info.get('preview', '')}")
    return lines


def remove(data_dir: Path, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    remove_tree(folder(data_dir, user_id, session_id))
