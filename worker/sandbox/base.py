"""One interface, three backends: `run(job) -> result`, plus `terminate()`, `health()` and
`close()`.

A job and a result are the dicts of DESIGN.md ("Runner job and result"). Whatever happens
to the sandbox (it times out, runs out of memory, crashes, floods its output), `run`
returns a result dict with `ok: false` and an error the user can read; it raises
`SandboxUnavailable` only when no sandbox could be started at all.

`Backend.run` is the one skeleton every backend follows (refuse a job of the wrong shape,
apply the limits, execute, report a run `terminate` stopped as cancelled, time it); a
backend writes only `_execute` (one job in one fresh sandbox) and `_stop` (kill one
running sandbox). The failure texts a user reads are written here once.
"""

from __future__ import annotations

import abc
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from runner import job as contract
from runner.job import DEFAULT_LIMITS, blank_result, job_problem
from worker.sandbox.result import problem as result_problem

if TYPE_CHECKING:
    from api.config import Settings

log = logging.getLogger("quarry.sandbox")

# The runner stops a snippet itself at `timeout_s` (and still reports what it printed); the
# backend kills the process this long after, if it has not answered by then (a long call in
# C, a snippet that swallows the runner's timeout, a result that takes long to collect).
KILL_GRACE_S = 2.0
# JSON framing around a result the runner already capped at `max_output_bytes`: what a
# backend reads at most is the cap plus this.
OUTPUT_SLACK = 64 << 10
# Where a container or pod sees the job's files, one read-only mount each.
JOB_DIR = "/job"


class SandboxUnavailable(RuntimeError):
    """No sandbox could be started (missing isolation, no engine, cluster unreachable)."""


def failure(kind: str, message: str, duration_ms: int = 0) -> dict[str, Any]:
    return blank_result({"type": kind, "message": message, "line": None}, duration_ms)


def timed_out(limits: dict[str, Any], ran_s: float | None = None) -> dict[str, Any]:
    """A snippet stopped at its wall-clock limit (and after how long, when that is known)."""
    if ran_s is not None:
        return failure("TimeoutError", contract.timeout_message(limits["timeout_s"], ran_s))
    return failure(
        "TimeoutError", f"The snippet ran longer than {limits['timeout_s']} s and was stopped."
    )


def too_large(limits: dict[str, Any]) -> dict[str, Any]:
    return failure(
        "OutputTooLarge",
        f"The snippet's output went over {limits['max_output_bytes']} bytes; print or return "
        "less (e.g. df.head()).",
    )


def out_of_memory(limits: dict[str, Any]) -> dict[str, Any]:
    return failure(
        "MemoryError",
        f"The snippet used more than its {limits['memory_mb']} MB of memory and was stopped.",
    )


def ended_without_result(what: str, why: str) -> dict[str, Any]:
    """The sandbox (`what`: "process", "container", "pod") ended and said nothing."""
    return failure("SandboxCrashed", f"The snippet's {what} ended without a result{why}.")


def refused(job: Any) -> dict[str, Any] | None:
    """A JobError result for a job of the wrong shape (before any sandbox is spent on it)."""
    problem = job_problem(job)
    return None if problem is None else failure("JobError", problem)


def default_limits(settings: Settings) -> dict[str, int]:
    """The limits a job gets unless it sets its own, from the settings."""
    return {
        "timeout_s": settings.sandbox_timeout_s,
        "memory_mb": settings.sandbox_memory_mb,
        "max_output_bytes": settings.sandbox_max_output_mb << 20,
    }


def container_settings(settings: Settings) -> dict[str, Any]:
    """What the container backends (docker, kubernetes) take alike from the settings."""
    return {
        "image": settings.sandbox_image,
        "cpus": settings.sandbox_cpus,
        "data_dir": str(settings.data_dir),
        "limits": default_limits(settings),
    }


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
    text, replaced = contract.utf8_text(json.dumps(result, ensure_ascii=False))
    if not replaced:
        return result
    fixed: dict[str, Any] = json.loads(text)
    notes = fixed.get("notes")
    if isinstance(notes, list) and contract.REPLACED_SURROGATES not in notes:
        notes.append(contract.REPLACED_SURROGATES)
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


def plan_files(
    job: dict[str, Any], root: str | None, source: Callable[[str], str] = str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The job as a container or pod sees it (each file's path rewritten to its mount under
    JOB_DIR) and its (source, mount path) pairs, `source` being what the engine is given for
    a file's real path. Only existing regular files, and only under `root` when one is
    given (`JobPathError` otherwise)."""
    pairs: list[tuple[str, str]] = []
    rewritten = dict(job)
    for key, kind in (("datasets", "dataset"), ("workspace", "workspace")):
        items = []
        for index, item in enumerate(job.get(key) or []):
            target = f"{JOB_DIR}/{kind}-{index}"
            pairs.append((source(job_file(item, root)), target))
            items.append({**item, "path": target})
        rewritten[key] = items
    return rewritten, pairs


class Runs:
    """The snippets a backend is running now (by a key `Backend.run` hands out, with the
    handle `_stop` kills), and which of them `terminate` stopped. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._live: dict[int, Any] = {}
        self._stopped: set[int] = set()

    def new_key(self) -> int:
        return next(self._keys)

    @contextmanager
    def running(self, key: int, handle: Any) -> Iterator[None]:
        """`handle` is what `terminate` stops while the block runs."""
        with self._lock:
            self._live[key] = handle
        try:
            yield
        finally:
            with self._lock:
                self._live.pop(key, None)

    def discard(self, handle: Any) -> None:
        """`handle` is gone already (removed by `close`): nothing left to stop."""
        with self._lock:
            for key in [k for k, h in self._live.items() if h is handle]:
                del self._live[key]

    def was_stopped(self, key: int) -> bool:
        with self._lock:
            return key in self._stopped

    def settle(self, key: int) -> bool:
        """Whether the run was stopped; forgets it."""
        with self._lock:
            stopped = key in self._stopped
            self._stopped.discard(key)
            return stopped

    def handles(self) -> list[Any]:
        with self._lock:
            return list(self._live.values())

    def stop_all(self) -> list[Any]:
        """The handles running now, each marked stopped."""
        with self._lock:
            self._stopped.update(self._live)
            return list(self._live.values())


class Backend(abc.ABC):
    """One way to run snippets. `run` blocks until the snippet's result (or failure) is
    in; it may be called from several threads at once. `terminate` stops, from any
    thread, every snippet this backend is running at that moment: their `run` calls
    return a `Cancelled` failure. `close` terminates and lets go of what the backend
    holds (pool, client)."""

    name: ClassVar[str] = "abstract"

    def __init__(self, limits: dict[str, int], clock: Callable[[], float] = time.monotonic):
        self.limits = limits  # the defaults a job's own limits override
        self._clock = clock
        self._runs = Runs()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        started = self._clock()
        if (refusal := refused(job)) is not None:
            return refusal  # before any sandbox is spent on it
        job = with_limits(job, self.limits)
        key = self._runs.new_key()
        try:
            result = self._execute(job, key)
        except JobPathError as exc:
            result = failure("JobError", f"The job names a file the sandbox may not see: {exc}")
        finally:
            stopped = self._runs.settle(key)
        if stopped:
            result = cancelled()
        result["duration_ms"] = int((self._clock() - started) * 1000)
        return result

    @abc.abstractmethod
    def _execute(self, job: dict[str, Any], key: int) -> dict[str, Any]:
        """Run one job (limits applied) in a fresh sandbox and return its result or failure.
        The sandbox is registered with `self._runs.running(key, handle)` while it runs, so
        `terminate` can stop it; a file the job may not give it raises `JobPathError`."""

    @abc.abstractmethod
    def _stop(self, handle: Any) -> None:
        """Kill one running sandbox (from another thread); its `_execute` then returns."""

    def running(self) -> list[Any]:
        """The handles of the sandboxes running now."""
        return self._runs.handles()

    def terminate(self) -> int:
        """Stop every snippet running now; how many were stopped. Their `run` calls return
        a `Cancelled` failure."""
        handles = self._runs.stop_all()
        for handle in handles:
            self._stop(handle)
        return len(handles)

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings) -> Backend:
        """The backend as the settings configure it (SandboxUnavailable if it cannot be)."""

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": True}

    def close(self) -> None:
        self.terminate()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
