"""Dataset conversion on the `datasets` queue, and the reaper that keeps a dataset from
staying `processing` forever.

The API streams an upload to DATA_DIR/uploads/<upload_id>, creates one dataset per table
(status `processing`, the inspected table in `source`), commits, then sends
`worker.tasks.convert_upload(upload_id)`. Here a worker claims the upload's datasets with
one conditional UPDATE, converts them in a capped, secret-less subprocess
(worker/converter.py) while it heartbeats them, and settles each one `ready` or `failed`,
again conditionally (`WHERE status = 'processing' AND attempts = <our claim>`): a duplicate
message, a re-send racing a slow worker, or a delete racing the conversion settle to
exactly one outcome, and nothing is converted twice at the same time.

The broker only says "look at upload X"; the database plus the staging folder hold all a
worker needs, so `reap` can send a lost message again. Like runs (worker/runs.py): a
dataset whose worker stopped heartbeating is sent again once, then failed; one that no
worker took (a lost message) is sent again once, then failed. Either way with a message
that tells the user what to do. An API that died after recording an upload but before
sending its message is a lost message like any other.

An API that died before recording the upload (killed while the file streamed in) leaves a
staging folder no dataset names: the reaper removes it once nothing has touched it for
longer than an upload may take to arrive (STAGING_ABANDONED_AFTER_S), as it does a folder
that outlived its datasets.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.db import utcnow
from api.ingest import staging
from api.ingest.upload import UPLOAD_TIMEOUT_S
from api.liveness import QueueLiveness
from api.logs import get_logger
from api.models import Dataset, DatasetStatus
from api.storage import dataset_dir, remove_tree, staging_dir, uploads_dir
from worker import metrics
from worker.converter import failure, run_converter
from worker.ticker import Ticker

log = get_logger("quarry.datasets")

PROCESSING = DatasetStatus.PROCESSING

FILE_GONE = "Quarry no longer has the uploaded file to convert; upload it again."
INTERRUPTED = "Quarry stopped while this file was being converted; upload it again."
UNEXPECTED = "Conversion failed unexpectedly."
NO_RESULT = "No result from the converter."


def worker_lost(attempts: int) -> str:
    return (
        f"The worker converting this file stopped responding ({attempts} attempts); it may "
        "have run out of memory or been restarted. Upload the file again, or split it into "
        "smaller files."
    )


def never_started(timeout_s: float) -> str:
    return (
        f"No worker started converting this file within {timeout_s:g} s; check that a "
        "worker is listening on the datasets queue, then upload the file again."
    )


def time_limits(settings: Settings) -> dict[str, int]:
    """Celery time limits for the conversion task: the converter has its own timeout
    (INGEST_TIMEOUT_SECONDS), which the app's turn-sized defaults must not cut short."""
    return {
        "soft_time_limit": settings.ingest_timeout_seconds + 60,
        "time_limit": settings.ingest_timeout_seconds + 90,
    }


@dataclass(frozen=True)
class Claim:
    """One dataset this worker converts: `attempt` is the claim's token."""

    id: uuid.UUID
    user_id: uuid.UUID
    attempt: int
    source: dict[str, Any] | None
    format: str


def claim(db: Session, upload_id: uuid.UUID) -> list[Claim]:
    """The upload's datasets nobody is converting, now ours (heartbeat set, attempts + 1)."""
    rows = db.execute(
        update(Dataset)
        .where(
            Dataset.upload_id == upload_id,
            Dataset.status == PROCESSING,
            Dataset.heartbeat_at.is_(None),
        )
        .values(heartbeat_at=utcnow(), attempts=Dataset.attempts + 1)
        .returning(
            Dataset.id, Dataset.user_id, Dataset.attempts, Dataset.source, Dataset.source_format
        )
    ).all()
    db.commit()
    return [Claim(*row) for row in sorted(rows, key=lambda r: r[0])]


class Heartbeat(Ticker):
    """While converting: `heartbeat_at` refreshed every `every_s` on the datasets we hold
    (the reaper takes a dataset without a recent heartbeat for one whose worker died)."""

    name = "quarry-ingest-beat"

    def __init__(self, factory: sessionmaker[Session], claims: list[Claim], every_s: float) -> None:
        super().__init__(every_s)
        self._factory = factory
        self._claims = claims

    def tick(self) -> None:
        try:
            with self._factory() as db:
                now = utcnow()
                for c in self._claims:
                    db.execute(
                        update(Dataset)
                        .where(
                            Dataset.id == c.id,
                            Dataset.status == PROCESSING,
                            Dataset.attempts == c.attempt,
                        )
                        .values(heartbeat_at=now)
                    )
                db.commit()
        except Exception as exc:  # the database blinked: try again next tick
            log.warning("dataset heartbeat failed", error=str(exc))


def convert_upload(
    upload_id: str | uuid.UUID, settings: Settings, factory: sessionmaker[Session]
) -> str:
    """The body of `worker.tasks.convert_upload`. Returns "converted", or "skipped" when
    there was nothing of this upload left for us (settled, deleted, or another worker's)."""
    upload = uuid.UUID(str(upload_id))
    data_dir = settings.data_dir.resolve()
    staging = staging_dir(data_dir, upload)
    with factory() as db:
        claims = claim(db, upload)
    if not claims:
        log.info("upload not claimable", upload_id=upload.hex)
        clean_up_upload(factory, data_dir, upload)
        return "skipped"
    started = time.perf_counter()
    try:
        results = _convert(settings, factory, data_dir, staging, claims)
    except Exception as exc:  # never leave datasets "processing" because of a bug here
        log.exception("conversion failed", upload_id=upload.hex, error=str(exc))
        results = {str(c.id): failure(UNEXPECTED) for c in claims}
    with factory() as db:
        for c in claims:
            status = settle(db, data_dir, c, results.get(str(c.id)) or failure(NO_RESULT))
            if status is not None:  # (None: superseded, someone else's outcome stands)
                metrics.DATASET_CONVERSIONS.labels(c.format, status).inc()
            log.info(
                "dataset converted",
                dataset_id=str(c.id),
                format=c.format,
                status=status or "superseded",
                seconds=round(time.perf_counter() - started, 3),
            )
    metrics.DATASET_SECONDS.observe(time.perf_counter() - started)
    clean_up_upload(factory, data_dir, upload)
    return "converted"


def _convert(
    settings: Settings,
    factory: sessionmaker[Session],
    data_dir: Path,
    staging: Path,
    claims: list[Claim],
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    items = []
    for c in claims:
        source = c.source
        if source is None or not (staging / source["path"]).is_file():
            # DATA_DIR must be the same folder for the API and the workers.
            log.error("uploaded file missing", dataset_id=str(c.id), staging=str(staging))
            results[str(c.id)] = failure(FILE_GONE)
            continue
        table = {**source, "path": str(staging / source["path"])}
        items.append(
            {
                "dataset_id": str(c.id),
                "table": table,
                "out_dir": str(dataset_dir(data_dir, c.user_id, c.id)),
            }
        )
    if items:
        with Heartbeat(factory, claims, settings.run_heartbeat_s):
            results.update(run_converter(settings, items, staging))
    return results


def settle(db: Session, data_dir: Path, c: Claim, result: dict[str, Any]) -> str | None:
    """Write the outcome of one claimed dataset; None when it was no longer ours (deleted,
    failed by the reaper, or claimed again after we looked lost). The row is locked while
    its files are put right, so whoever sees `failed` finds no files, and no files of ours
    outlive a dataset deleted meanwhile."""
    folder = dataset_dir(data_dir, c.user_id, c.id)
    current = db.execute(
        select(Dataset.status, Dataset.attempts).where(Dataset.id == c.id).with_for_update()
    ).first()
    if current is None or current.status != PROCESSING or current.attempts != c.attempt:
        db.rollback()
        if current is None or current.status == DatasetStatus.FAILED:  # deleted, or reaped
            remove_tree(folder)
        return None
    values: dict[str, Any] = {"source": None}
    if result.get("ok"):
        values.update(
            status=DatasetStatus.READY,
            error=None,
            row_count=result["row_count"],
            column_count=result["column_count"],
            stored_bytes=result["stored_bytes"],
            # How the conversion went, for operators (and `make bench-api`).
            profile={
                **result["profile"],
                "ingest": {
                    "seconds": result.get("seconds"),
                    "peak_rss_mb": result.get("peak_rss_mb"),
                },
            },
            ready_at=utcnow(),
        )
    else:
        values.update(status=DatasetStatus.FAILED, error=_text(result.get("error")))
        remove_tree(folder)
    try:
        db.execute(update(Dataset).where(Dataset.id == c.id).values(**values))
        db.commit()
    except Exception as exc:  # what the converter found cannot be stored: say so, settle
        db.rollback()
        log.exception("dataset outcome not storable", dataset_id=str(c.id), error=str(exc))
        return _fail_unstorable(db, folder, c, exc)
    return str(values["status"].value)


def _text(error: Any) -> str:
    """An error PostgreSQL can store (it refuses NUL in text)."""
    return str(error or "Conversion failed.").replace("\x00", "\ufffd")


def unstorable(exc: BaseException) -> str:
    return (
        "The file was read, but Quarry could not store what it found in it "
        f"({type(exc).__name__}); upload it again, or as CSV or Parquet, or report it to "
        "the operator."
    )


def _fail_unstorable(db: Session, folder: Path, c: Claim, exc: BaseException) -> str | None:
    """A result the database refused fails its dataset (still only if still ours), so
    that the dataset does not stay `processing` until the reaper gives up on it."""
    current = db.execute(
        select(Dataset.status, Dataset.attempts).where(Dataset.id == c.id).with_for_update()
    ).first()
    if current is None or current.status != PROCESSING or current.attempts != c.attempt:
        db.rollback()
        return None
    remove_tree(folder)
    db.execute(
        update(Dataset)
        .where(Dataset.id == c.id)
        .values(status=DatasetStatus.FAILED, error=unstorable(exc), source=None)
    )
    db.commit()
    return str(DatasetStatus.FAILED.value)


def clean_up_upload(factory: sessionmaker[Session], data_dir: Path, upload_id: uuid.UUID) -> None:
    """The staging folder goes once no dataset of the upload is waiting for it."""
    with factory() as db:
        staging.release(db, data_dir, upload_id)


# --- the reaper ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LostPolicy:
    """What tells a lost conversion message from a slow one (see `reap`)."""

    live: QueueLiveness
    depth: int | None  # messages waiting in the broker's `datasets` queue (None: unknown)
    claim_timeout_s: float
    max_resends: int


def reap(
    db: Session,
    *,
    data_dir: Path,
    stale_after_s: float,
    queued_timeout_s: float,
    send: Callable[[uuid.UUID], bool],
    max_attempts: int = 2,
    abandoned_after_s: float | None = None,
    lost: LostPolicy | None = None,
) -> dict[str, int]:
    """Datasets whose worker stopped heartbeating go back to the queue once (`max_attempts`
    claims in all), then fail; datasets no worker took (a lost message) are sent again once,
    then fail; datasets left `processing` by an API that converted in-process (before
    migration 0004: no upload id) fail. Each change is conditional on what was read, so two
    reapers never both act on a dataset. One message per upload, whatever its tables.

    With `lost` (what the workers' heartbeats and the broker say), a message is known lost
    much sooner: a dataset nobody claimed `claim_timeout_s` after it was sent, while the
    `datasets` queue has a live worker and holds no message, is sent again (up to
    `max_resends` times); and time with no live worker on that queue does not count
    towards `queued_timeout_s`. Without a live worker nothing waiting is touched.

    Then the staging folders nothing will use (see `remove_abandoned_uploads`) go."""
    data_dir = data_dir.resolve()
    now = utcnow()
    counts = {"requeued": 0, "failed": 0, "removed_uploads": 0}
    resend: set[uuid.UUID] = set()
    failed: list[uuid.UUID | None] = []  # the uploads of the datasets failed

    def apply(row: Any, condition: Iterable[Any], values: dict[str, Any]) -> bool:
        still = db.execute(
            select(Dataset.id)
            .where(Dataset.id == row.id, Dataset.status == PROCESSING, *condition)
            .with_for_update()
        ).first()
        if still is None:  # changed since we looked: someone else settled or took it
            db.rollback()
            return False
        failing = values.get("status") == DatasetStatus.FAILED
        if failing:  # under the row lock: whoever sees `failed` finds no files
            remove_tree(dataset_dir(data_dir, row.user_id, row.id))
        db.execute(update(Dataset).where(Dataset.id == row.id).values(**values))
        db.commit()
        if failing:
            counts["failed"] += 1
            failed.append(row.upload_id)
            log.warning("dataset reaped", dataset_id=str(row.id), error=values["error"])
        else:
            counts["requeued"] += 1
            resend.add(row.upload_id)
        return True

    def failing(error: str) -> dict[str, Any]:
        return {"status": DatasetStatus.FAILED, "error": error, "source": None}

    columns = (
        Dataset.id,
        Dataset.user_id,
        Dataset.upload_id,
        Dataset.heartbeat_at,
        Dataset.attempts,
        Dataset.requeues,
        Dataset.enqueued_at,
        Dataset.created_at,
    )
    stale = db.execute(
        select(*columns).where(
            Dataset.status == PROCESSING,
            Dataset.heartbeat_at < now - timedelta(seconds=stale_after_s),
        )
    ).all()
    for row in stale:
        retry = row.upload_id is not None and row.attempts < max_attempts
        values = (
            {"heartbeat_at": None, "requeues": Dataset.requeues + 1, "enqueued_at": now}
            if retry
            else failing(worker_lost(row.attempts))
        )
        apply(row, [Dataset.heartbeat_at == row.heartbeat_at], values)

    wait_s = queued_timeout_s if lost is None else min(queued_timeout_s, lost.claim_timeout_s)
    cutoff: datetime = now - timedelta(seconds=wait_s)
    unclaimed = db.execute(
        select(*columns).where(
            Dataset.status == PROCESSING,
            Dataset.heartbeat_at.is_(None),
            func.coalesce(Dataset.enqueued_at, Dataset.created_at) < cutoff,
        )
    ).all()
    if lost is not None and not lost.live.has_worker("datasets"):
        unclaimed = []  # nothing would take them; the API tells their owners so
    served_since = lost.live.since.get("datasets") if lost is not None else None
    for row in unclaimed:
        waiting = [Dataset.heartbeat_at.is_(None), Dataset.requeues == row.requeues]
        sent = row.enqueued_at or row.created_at
        served = now - max(sent, served_since or sent)
        if served > timedelta(seconds=queued_timeout_s):
            if row.upload_id is None:
                apply(row, waiting, failing(INTERRUPTED))
            elif row.requeues < 1:
                apply(row, waiting, {"requeues": Dataset.requeues + 1, "enqueued_at": now})
            else:
                apply(row, waiting, failing(never_started(queued_timeout_s)))
        elif (
            lost is not None
            and lost.depth == 0
            and row.upload_id is not None
            and row.requeues < lost.max_resends
        ):  # the broker holds nothing for the queue: its message was lost
            apply(row, waiting, {"requeues": Dataset.requeues + 1, "enqueued_at": now})

    for upload_id in sorted(resend):
        send(upload_id)
    for upload_id in {upload for upload in failed if upload is not None} - resend:
        staging.release(db, data_dir, upload_id)
    counts["removed_uploads"] = remove_abandoned_uploads(
        db, data_dir, STAGING_ABANDONED_AFTER_S if abandoned_after_s is None else abandoned_after_s
    )
    return counts


# A staging folder untouched this long belongs to no request still running: an upload
# must arrive within UPLOAD_TIMEOUT_S (api/ingest/upload.py enforces it); inspecting it
# (a ZIP extracts into the folder, refreshing its times) and registering its datasets take
# seconds to minutes, well within the half hour added.
STAGING_ABANDONED_AFTER_S = UPLOAD_TIMEOUT_S + 1800
_UPLOAD_FOLDER = re.compile(r"[0-9a-f]{32}")


def remove_abandoned_uploads(db: Session, data_dir: Path, older_than_s: float) -> int:
    """Remove the staging folders (DATA_DIR/uploads/<upload id>) that nothing will use:
    untouched for `older_than_s` (no live upload is writing there: see
    STAGING_ABANDONED_AFTER_S) and with no dataset of theirs waiting to be converted. That
    is an upload whose API died (killed, out of memory) while it was arriving or being
    inspected, before its datasets were recorded, or one whose datasets were all settled
    or deleted while nobody cleaned up after them. How many went."""
    root = uploads_dir(data_dir)
    try:
        entries = [e for e in os.scandir(root) if _UPLOAD_FOLDER.fullmatch(e.name)]
    except FileNotFoundError:
        return 0
    now = time.time()
    old = {
        uuid.UUID(entry.name): Path(entry.path)
        for entry in entries
        if entry.is_dir(follow_symlinks=False) and now - _last_touched(entry.path) > older_than_s
    }
    if not old:
        return 0
    waiting = set(
        db.scalars(
            select(Dataset.upload_id).where(
                Dataset.upload_id.in_(list(old)), Dataset.status == PROCESSING
            )
        )
    )
    db.rollback()  # (a read: end the transaction)
    removed = 0
    for upload_id, folder in sorted(old.items()):
        if upload_id in waiting:
            continue  # a conversion still needs it; the dataset reaper settles that first
        remove_tree(folder)
        removed += 1
        log.warning("abandoned upload removed", upload_id=upload_id.hex, folder=str(folder))
    return removed


def _last_touched(folder: str) -> float:
    """The newest modification time in the folder (itself, its files, its subfolders): a
    live upload moves it as it writes, and so does a ZIP being extracted."""
    newest = os.lstat(folder).st_mtime
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest
