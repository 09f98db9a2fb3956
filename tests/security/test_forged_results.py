"""A result is untrusted input: what a subverted runner could send, and what the worker does.

Everything here is what `parse_result` (every backend's reader) receives from a runner that
a snippet has taken over: it can write any bytes to its socket, stdout or pod log. A result
of the wrong shape is refused whole with a SandboxError the user can read; a well-formed
result is data (stored as JSON, shown as text, tables and Plotly figures), whatever it says.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from runner.job import blank_result
from worker import workspace
from worker.sandbox.base import parse_result
from worker.sandbox.result import MAX_FIGURES, MAX_TABLE_ROWS


def good() -> dict[str, Any]:
    result = blank_result()
    result.update(
        stdout="hi\n",
        result="42",
        tables=[
            {
                "name": "result",
                "columns": ["a"],
                "rows": [[1], [None], [{"x": [1, 2]}]],
                "truncated": False,
                "total_rows": 3,
                "total_columns": 1,
            }
        ],
        figures=[{"data": [{"type": "bar", "x": [1], "y": [2]}], "layout": {"title": "t"}}],
        workspace=[
            {"name": "größe", "kind": "value", "value": 3},
            {
                "name": "df",
                "kind": "dataframe",
                "arrow": base64.b64encode(b"ARROW1").decode(),
                "shape": [1, 1],
                "columns": ["a"],
                "series": False,
            },
        ],
        notes=["a note"],
        duration_ms=12,
    )
    return result


def forged(**changes: Any) -> dict[str, Any]:
    result = good()
    for path, value in changes.items():
        target: Any = result
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return result


DELETE = object()

FORGERIES = {
    # types
    "ok-as-string": forged(ok="yes"),
    "duration-as-string": forged(duration_ms="12; DROP TABLE runs"),
    "negative-duration": forged(duration_ms=-5),
    "stdout-as-list": forged(stdout=["hi"]),
    "result-as-object": forged(result={"__class__": "x"}),
    "error-as-list": forged(ok=False, error=["PolicyError"]),
    "error-type-with-spaces": forged(
        ok=False, error={"type": "<script>alert(1)</script>", "message": "m", "line": None}
    ),
    "error-extra-key": forged(
        ok=False, error={"type": "E", "message": "m", "line": None, "traceback": "..."}
    ),
    "ok-with-an-error": forged(error={"type": "E", "message": "m", "line": 1}),
    "not-ok-without-error": forged(ok=False),
    "extra-top-level-key": forged(execution_id="00000000-0000-0000-0000-000000000000"),
    "notes-as-string": forged(notes="note"),
    # sizes and counts
    "too-many-figures": forged(figures=[good()["figures"][0]] * (MAX_FIGURES + 1)),
    "too-many-rows": forged(tables__0__rows=[[1]] * (MAX_TABLE_ROWS + 1)),
    "too-many-notes": forged(notes=["n"] * 1000),
    # tables and figures of the wrong shape
    "table-without-columns": forged(tables__0__columns=DELETE),
    "table-rows-not-lists": forged(tables__0__rows=["1"]),
    "figure-as-string": forged(figures=["<svg onload=alert(1)>"]),
    "figure-extra-key": forged(figures=[{"data": [], "layout": {}, "frames": []}]),
    "figure-data-not-traces": forged(figures=[{"data": "x", "layout": {}}]),
    # workspace names are file names on the data volume
    "workspace-path-name": forged(workspace__0__name="../../users/other/secret"),
    "workspace-dotfile-name": forged(workspace__0__name=".index"),
    "workspace-private-name": forged(workspace__0__name="_hidden"),
    "workspace-unknown-kind": forged(workspace__0__kind="pickle"),
    "workspace-arrow-not-base64": forged(workspace__1__arrow="not base64!"),
    "workspace-bad-shape": forged(workspace__1__shape=[1]),
}


def test_a_real_result_passes_unchanged() -> None:
    raw = json.dumps(good()).encode()
    assert parse_result(raw, 5) == good()


def test_a_result_of_an_older_runner_gets_the_keys_it_left_out() -> None:
    result = parse_result(b'{"ok": true, "stdout": "x", "error": null}', 5)
    assert result["ok"] is True
    assert (result["tables"], result["figures"], result["workspace"]) == ([], [], [])


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_forged_result_is_refused_whole(name: str) -> None:
    result = parse_result(json.dumps(FORGERIES[name]).encode(), 7)
    assert result["ok"] is False
    assert result["error"]["type"] == "SandboxError"
    assert result["error"]["message"].startswith("The sandbox returned an invalid result (")
    # nothing of the forgery is passed on
    assert (result["stdout"], result["result"]) == ("", None)
    assert (result["tables"], result["figures"], result["workspace"]) == ([], [], [])


def test_a_forged_workspace_name_never_becomes_a_path(tmp_path: Path) -> None:
    """Even if a name got past the result check, the workspace writes identifiers only."""
    base = tmp_path / "ws"
    entries = copy.deepcopy(FORGERIES["workspace-path-name"]["workspace"])
    kept = workspace.store(base, entries, sequence=1)
    assert [e["name"] for e in kept] == ["df"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["df.arrow", "index.json", "ws"]


def test_well_formed_hostile_text_is_data() -> None:
    """Markup in a valid result stays text: the result is accepted, unchanged, and the UI
    shows it as text (frontend/render.py: st.code), with HTML rendering off everywhere."""
    hostile = good()
    hostile["stdout"] = "<script>fetch('/api/auth/refresh')</script>"
    hostile["result"] = "'<img src=x onerror=alert(1)>'"
    assert parse_result(json.dumps(hostile).encode(), 1) == hostile
    frontend = Path(__file__).resolve().parents[2] / "frontend"
    assert not [p for p in frontend.rglob("*.py") if "unsafe_allow_html" in p.read_text()]
