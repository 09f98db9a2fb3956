"""Running the converter, in the worker: one `python -m api.ingest.convert` process per
upload, with a memory cap, a timeout and an environment that holds no secrets.

The API stores an upload under DATA_DIR/uploads/<upload_id> (`api.storage.staging_dir`),
creates its datasets (status `processing`) and sends `worker.tasks.convert_upload` to the
`datasets` queue; worker/datasets.py claims the datasets, calls `run_converter` and marks
each one `ready` or `failed` with a message a user can act on. Nothing here touches the
database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.config import Settings
from api.logs import get_logger

log = get_logger("quarry.ingest")

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "TMPDIR", "HOME")


def converter_env() -> dict[str, str]:
    """The converter parses untrusted files: it gets no database URL, key or token."""
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("COVERAGE_")}
    env.update(
        ARROW_DEFAULT_MEMORY_POOL="system",  # predictable under RLIMIT_AS
        # glibc reserves 64 MB of address space per malloc arena (one per thread): under the
        # RLIMIT_AS cap that reservation, not real use, would make thread creation fail.
        MALLOC_ARENA_MAX="2",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: the converter is killed when the process waiting for it dies. A worker killed
    mid-conversion (out of memory, SIGKILL) must not leave its converter running, racing the
    retry the reaper sends for the same output files. Resolved before the fork, so that the
    child only makes one system call before exec."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the converter's timeout still holds
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before that call took effect
            os._exit(1)

    return set_parent_death_signal


_PR_SET_PDEATHSIG = 1


def failure(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def run_converter(
    settings: Settings, items: list[dict[str, Any]], cwd: Path
) -> dict[str, dict[str, Any]]:
    """Convert the tables of one upload in a fresh, capped process.

    `items` are `{"dataset_id", "table" (SourceTable JSON, absolute path), "out_dir"}`; the
    answer maps each dataset id to the converter's result (`ok`, counts and profile, or
    `error`). A converter that dies, runs out of memory or overruns INGEST_TIMEOUT_SECONDS
    fails every item with a message that says which."""
    ids = [str(item["dataset_id"]) for item in items]
    payload = {
        "memory_mb": settings.ingest_memory_mb,
        "max_columns": settings.max_dataset_columns,
        "items": items,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.ingest.convert"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=converter_env(),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent(),  # one system call in the child, no Python locks
    )
    try:
        out, err = proc.communicate(
            json.dumps(payload).encode(), timeout=settings.ingest_timeout_seconds
        )
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        message = (
            f"Converting took longer than {settings.ingest_timeout_seconds} s; "
            "upload a smaller file or raise INGEST_TIMEOUT_SECONDS."
        )
        return {dataset_id: failure(message) for dataset_id in ids}
    except BaseException:  # the task itself was stopped: leave no converter behind
        _kill(proc)
        proc.wait()
        raise
    if proc.returncode != 0:
        log.error(
            "converter exited", code=proc.returncode, stderr=err.decode(errors="replace")[-2000:]
        )
        out_of_memory = proc.returncode in (-signal.SIGKILL, -signal.SIGSEGV) or any(
            sign in err for sign in (b"MemoryError", b"bad_alloc", b"terminate called")
        )
        message = (
            "The converter ran out of memory on this file (INGEST_MEMORY_MB)."
            if out_of_memory
            else f"The converter stopped unexpectedly (exit code {proc.returncode})."
        )
        return {dataset_id: failure(message) for dataset_id in ids}
    results = json.loads(out)["results"]
    return {str(r["dataset_id"]): r for r in results}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
