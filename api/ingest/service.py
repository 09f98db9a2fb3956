"""Run conversions out of the request: one converter process per upload, results to the DB.

The request has already stored the upload and created its datasets (status `processing`);
this service converts them in a fresh `python -m api.ingest.convert` process with a memory
cap, a timeout and an environment that holds no secrets, then marks each dataset `ready` or
`failed` with a message a user can act on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.db import utcnow
from api.ingest.tables import SourceTable
from api.logs import get_logger
from api.metrics import DATASET_INGEST_SECONDS, DATASET_INGESTS
from api.models import Dataset, DatasetStatus
from api.storage import dataset_dir, remove_tree

log = get_logger("quarry.ingest")

_INTERRUPTED = "Quarry stopped while this file was being converted; upload it again."
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "TMPDIR", "HOME")


@dataclass
class IngestItem:
    dataset_id: uuid.UUID
    user_id: uuid.UUID
    table: SourceTable


@dataclass
class IngestJob:
    staging: Path
    items: list[IngestItem] = field(default_factory=list)


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


class IngestService:
    def __init__(self, settings: Settings, factory: sessionmaker[Session]) -> None:
        self._settings = settings
        self._factory = factory
        self._executor = ThreadPoolExecutor(
            max_workers=settings.ingest_workers, thread_name_prefix="quarry-ingest"
        )
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._unfinished: dict[uuid.UUID, IngestJob] = {}
        self._closed = False

    def submit(self, job: IngestJob) -> None:
        key = uuid.uuid4()
        with self._lock:
            if self._closed:
                raise RuntimeError("ingest service is shut down")
            self._unfinished[key] = job
        self._executor.submit(self._run, key, job)

    def _run(self, key: uuid.UUID, job: IngestJob) -> None:
        started = time.perf_counter()
        try:
            results = self._convert(job)
        except Exception as exc:  # never leave datasets "processing" because of a bug here
            log.exception("conversion failed", error=str(exc))
            results = {
                item.dataset_id: _failure("Conversion failed unexpectedly.") for item in job.items
            }
        finally:
            remove_tree(job.staging)
        with self._lock:
            if self._closed:
                return  # shutdown() already marked these
        self.apply(job, results)
        DATASET_INGEST_SECONDS.observe(time.perf_counter() - started)
        with self._lock:
            self._unfinished.pop(key, None)

    def _convert(self, job: IngestJob) -> dict[uuid.UUID, dict[str, Any]]:
        settings = self._settings
        payload = {
            "memory_mb": settings.ingest_memory_mb,
            "items": [
                {
                    "dataset_id": str(item.dataset_id),
                    "table": item.table.to_json(),
                    "out_dir": str(dataset_dir(settings.data_dir, item.user_id, item.dataset_id)),
                }
                for item in job.items
            ],
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.ingest.convert"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=converter_env(),
            cwd=job.staging,
            start_new_session=True,
        )
        with self._lock:
            self._running.add(proc)
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
            return {item.dataset_id: _failure(message) for item in job.items}
        finally:
            with self._lock:
                self._running.discard(proc)
        if proc.returncode != 0:
            if self._closed:  # killed by shutdown(), which reports these datasets itself
                return {}
            log.error(
                "converter exited",
                code=proc.returncode,
                stderr=err.decode(errors="replace")[-2000:],
            )
            out_of_memory = proc.returncode in (-signal.SIGKILL, -signal.SIGSEGV) or any(
                sign in err for sign in (b"MemoryError", b"bad_alloc", b"terminate called")
            )
            message = (
                "The converter ran out of memory on this file (INGEST_MEMORY_MB)."
                if out_of_memory
                else f"The converter stopped unexpectedly (exit code {proc.returncode})."
            )
            return {item.dataset_id: _failure(message) for item in job.items}
        results = json.loads(out)["results"]
        return {uuid.UUID(r["dataset_id"]): r for r in results}

    def apply(self, job: IngestJob, results: dict[uuid.UUID, dict[str, Any]]) -> None:
        """Write the outcome of each item; a dataset deleted meanwhile loses its files."""
        with self._factory() as db:
            ids = [item.dataset_id for item in job.items]
            rows = {d.id: d for d in db.scalars(select(Dataset).where(Dataset.id.in_(ids)))}
            for item in job.items:
                result = results.get(item.dataset_id) or _failure("No result from the converter.")
                dataset = rows.get(item.dataset_id)
                if dataset is None:  # deleted while converting
                    remove_tree(dataset_dir(self._settings.data_dir, item.user_id, item.dataset_id))
                    continue
                if dataset.status != DatasetStatus.PROCESSING:
                    continue  # already settled (a shutdown racing a finished conversion)
                if result.get("ok"):
                    dataset.status = DatasetStatus.READY
                    dataset.row_count = result["row_count"]
                    dataset.column_count = result["column_count"]
                    dataset.stored_bytes = result["stored_bytes"]
                    # How the conversion went, for operators (and `make bench-api`).
                    ingest = {
                        "seconds": result.get("seconds"),
                        "peak_rss_mb": result.get("peak_rss_mb"),
                    }
                    dataset.profile = {**result["profile"], "ingest": ingest}
                    dataset.ready_at = utcnow()
                else:
                    dataset.status = DatasetStatus.FAILED
                    dataset.error = result.get("error") or "Conversion failed."
                    remove_tree(dataset_dir(self._settings.data_dir, item.user_id, item.dataset_id))
                DATASET_INGESTS.labels(item.table.format, dataset.status.value).inc()
                log.info(
                    "dataset converted",
                    dataset_id=str(dataset.id),
                    status=dataset.status.value,
                    rows=dataset.row_count,
                    seconds=result.get("seconds"),
                )
            db.commit()

    def shutdown(self) -> None:
        """Stop converting; datasets left half-done are marked failed, not left processing."""
        with self._lock:
            self._closed = True
            running = list(self._running)
            unfinished = list(self._unfinished.values())
            self._unfinished.clear()
        for proc in running:
            _kill(proc)
        self._executor.shutdown(wait=True, cancel_futures=True)
        for job in unfinished:
            self.apply(job, {item.dataset_id: _failure(_INTERRUPTED) for item in job.items})
            remove_tree(job.staging)


def _failure(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
