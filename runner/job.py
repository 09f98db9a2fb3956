"""The shapes of a runner job and of its result (DESIGN.md, "Runner job and result"): the
job checked before anything runs, by the runner's command line and by every sandbox
backend; the result's keys, shared by the runner and the backends' own failures.
Standard library only."""

from __future__ import annotations

import keyword
from typing import Any

# A job's limits when it names none (each backend may set its own defaults over these).
DEFAULT_LIMITS: dict[str, int] = {"timeout_s": 30, "memory_mb": 1024, "max_output_bytes": 8 << 20}

# Added to a result's notes when text in it was not valid Unicode.
REPLACED_SURROGATES = (
    "Some text in the output was not valid Unicode (a lone surrogate such as '\\udcff'); "
    "each such character was replaced with U+FFFD (\ufffd)."
)


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


def utf8_text(text: str) -> tuple[str, bool]:
    """`text` as UTF-8 can carry it, and whether anything had to change. A Python string
    may hold lone surrogates (`"\\ud800"`, or bytes decoded with `surrogateescape`); UTF-8,
    JSON on the wire and PostgreSQL cannot. Each lone surrogate becomes U+FFFD; a pair left
    as two code points is joined into the character it stands for."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), True
    return text, False


def timeout_message(limit_s: float, ran_s: float) -> str:
    """What a snippet stopped at its wall-clock limit is told: the limit, and the time it
    had run when it was stopped (never less than the limit)."""
    return f"The snippet ran longer than {limit_s:g} s and was stopped after {ran_s:.1f} s."
