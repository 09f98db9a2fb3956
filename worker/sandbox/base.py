"""One interface, three backends: `run(job) -> result`, plus `health()` and `close()`.

A job and a result are the dicts of DESIGN.md ("Runner job and result"). Whatever happens
to the sandbox (it times out, runs out of memory, crashes, floods its output), `run`
returns a result dict with `ok: false` and an error the user can read; it raises
`SandboxUnavailable` only when no sandbox could be started at all.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import re
from typing import Any

from runner.job import DEFAULT_LIMITS, REPLACED_SURROGATES, blank_result, job_problem, utf8_text
from worker.sandbox.result import problem as result_problem

log = logging.getLogger("quarry.sandbox")

# The runner stops a snippet itself at `timeout_s` (and still reports what it printed); the
# backend kills the process this long after, if it has not answered by then (a long call in
# C, a snippet that swallows the runner's timeout, a result that takes long to collect).
KILL_GRACE_S = 2.0


class SandboxUnavailable(RuntimeError):
    """No sandbox could be started (missing isolation, no engine, cluster unreachable)."""


def failure(kind: str, message: str, duration_ms: int = 0) -> dict[str, Any]:
    return blank_result({"type": kind, "message": message, "line": None}, duration_ms)


def refused(job: Any) -> dict[str, Any] | None:
    """A JobError result for a job of the wrong shape (before any sandbox is spent on it)."""
    problem = job_problem(job)
    return None if problem is None else failure("JobError", problem)


def with_limits(job: dict[str, Any], defaults: dict[str, int] | None = None) -> dict[str, Any]:
    limits = {**DEFAULT_LIMITS, **(defaults or {}), **(job.get("limits") or {})}
    return {**job, "limits": limits}


def parse_result(raw: bytes, duration_ms: int) -> dict[str, Any]:
    """The sandbox's answer, as JSON only (never anything that executes on loading)."""
    try:
        result: dict[str, Any] = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than a result is
        return failure("SandboxError", "The sandbox returned an unreadable result.", duration_ms)
    if not isinstance(result, dict) or "ok" not in result:
        return failure("SandboxError", "The sandbox returned an unexpected result.", duration_ms)
    wrong = result_problem(result)
    if wrong is not None:
        # the runner never writes one: the snippet (or what it reached) made it up
        log.warning("sandbox result refused: %s", wrong)
        return failure(
            "SandboxError", f"The sandbox returned an invalid result ({wrong}).", duration_ms
        )
    for key, default in blank_result().items():  # what a runner of another version left out
        result.setdefault(key, default)
    if _SURROGATE_ESCAPE.search(raw):
        result = _without_lone_surrogates(result)
    if b"\\u0000" in raw:
        _shown_without_nul(result)
    return result


def _shown_without_nul(result: dict[str, Any]) -> None:
    """What a snippet shows is stored in PostgreSQL (executions, run events, charts), which
    refuses NUL in text: a DataFrame cell or a printed string holding one failed the whole
    run ("unexpected error (DataError)"). It is shown as U+FFFD, with a note; the values
    kept in the workspace (files, not the database) keep theirs."""
    workspace = result.get("workspace")
    kept = workspace if isinstance(workspace, list) else []
    data = [
        {key: entry.pop(key) for key in ("value", "arrow") if key in entry}
        for entry in kept
        if isinstance(entry, dict)
    ]
    found = _replace_nul(result)
    for entry, held in zip((e for e in kept if isinstance(e, dict)), data, strict=True):
        entry.update(held)
    if found and isinstance(result.get("notes"), list):
        result["notes"].append(SHOWN_WITHOUT_NUL)


SHOWN_WITHOUT_NUL = (
    "Some output held NUL characters (U+0000); they are shown as U+FFFD (\ufffd). "
    "The values themselves are unchanged."
)


def _replace_nul(root: Any) -> bool:
    """Every NUL in the text (keys too) of a decoded JSON value, as U+FFFD, in place; an
    explicit stack, as the value may nest deeply. Whether there was one."""
    found = False
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in list(node):
                value = node[key]
                if isinstance(key, str) and "\x00" in key:
                    del node[key]
                    key = key.replace("\x00", "\ufffd")
                    node[key] = value
                    found = True
                if isinstance(value, str) and "\x00" in value:
                    node[key] = value.replace("\x00", "\ufffd")
                    found = True
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str) and "\x00" in value:
                    node[index] = value.replace("\x00", "\ufffd")
                    found = True
                elif isinstance(value, dict | list):
                    stack.append(value)
    return found


# `\ud800` to `\udfff` in JSON text: a surrogate, alone or one half of a pair.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _without_lone_surrogates(result: dict[str, Any]) -> dict[str, Any]:
    """A result whose JSON escapes a lone surrogate (plotly writes figures with
    `ensure_ascii`) decodes to text that nothing downstream can store or send as UTF-8:
    each one becomes U+FFFD, with a note."""
    text, replaced = utf8_text(json.dumps(result, ensure_ascii=False))
    if not replaced:
        return result
    fixed: dict[str, Any] = json.loads(text)
    notes = fixed.get("notes")
    if isinstance(notes, list) and REPLACED_SURROGATES not in notes:
        notes.append(REPLACED_SURROGATES)
    return fixed


def cancelled(duration_ms: int = 0) -> dict[str, Any]:
    return failure("Cancelled", "The snippet was stopped before it finished.", duration_ms)


class JobPathError(ValueError):
    """A dataset or workspace path the sandbox may not be given."""


def job_file(item: dict[str, Any], root: str | None) -> str:
    """The real path of a job's dataset or workspace file: an existing regular file, and
    under `root` (the data directory) when one is given."""
    real = os.path.realpath(str(item["path"]))
    if root is not None and (real == root or os.path.commonpath([root, real]) != root):
        raise JobPathError(f"{item.get('name', '?')}: the file is outside the data dir")
    if not os.path.isfile(real):
        raise JobPathError(f"{item.get('name', '?')}: no such file")
    return real


class Backend(abc.ABC):
    """One way to run snippets. `run` blocks until the snippet's result (or failure) is
    in; it may be called from several threads at once. `terminate` stops, from any
    thread, every snippet this backend is running at that moment: their `run` calls
    return a `Cancelled` failure. `close` terminates and lets go of what the backend
    holds (pool, client)."""

    name: str = "abstract"
    supports_warm_pool = False
    supports_network_isolation = True

    @abc.abstractmethod
    def run(self, job: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def terminate(self) -> int:
        """Stop every snippet running now; how many were stopped."""

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": True}

    def close(self) -> None:
        self.terminate()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
