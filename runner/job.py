"""The shapes of a runner job and of its result (DESIGN.md, "Runner job and result"): the
job checked before anything runs, by the runner's command line and by every sandbox
backend; the result's keys, shared by the runner and the backends' own failures.
Standard library only."""

from __future__ import annotations

import keyword
from typing import Any


def job_problem(job: Any) -> str | None:
    """What is wrong with a job's shape (see DESIGN.md: Runner job and result), if anything."""
    if not isinstance(job, dict):
        return "The job must be a JSON object."
    if not isinstance(job.get("code", ""), str):
        return "`code` must be a string."
    for key, kinds in (("datasets", ("name", "path")), ("workspace", ("name", "path"))):
        items = job.get(key, [])
        if not isinstance(items, list):
            return f"`{key}` must be a list."
        for item in items:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in kinds):
                return f"Each entry of `{key}` needs a string `name` and `path`."
            name = item["name"]
            if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
                return f"{name!r} in `{key}` is not a name a snippet can use."
    limits = job.get("limits", {})
    if not isinstance(limits, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in limits.values()
    ):
        return "`limits` must map names to positive integers."
    return None


def blank_result(error: dict[str, Any] | None = None, duration_ms: int = 0) -> dict[str, Any]:
    """A result with every key, nothing shown: `ok` unless there is an error."""
    return {
        "ok": error is None,
        "stdout": "",
        "error": error,
        "result": None,
        "tables": [],
        "figures": [],
        "workspace": [],
        "notes": [],
        "duration_ms": duration_ms,
    }
