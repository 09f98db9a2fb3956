"""Which queues have a live worker, from the heartbeats the workers write themselves.

A worker's main process upserts its `worker_heartbeats` row every WORKER_HEARTBEAT_S while
its consumer runs (worker/heartbeat.py) and deletes it when it stops cleanly; a row older
than three intervals is a worker that died without saying so (kill -9, OOM, a lost host).
Reading is one indexed query over a table with a row per worker process, cheap enough for
every `/readyz` and every few seconds in each API process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from api.db import new_id, utcnow
from api.models import WorkerHeartbeat
from api.queue import QUEUES

STALE_FACTOR = 3  # heartbeats missed before a worker counts as dead

# Which queue serves what the user waits for, and what to tell them when it has no worker.
WAITING_NOTICES = {
    "analysis": (
        "No analysis worker is running, so nothing can answer this yet. It stays queued and "
        "starts as soon as a worker does (start one, or cancel the question)."
    ),
    "datasets": (
        "No worker is converting uploads right now. The file is kept and converted as soon "
        "as a worker starts."
    ),
}


@dataclass(frozen=True)
class QueueLiveness:
    """Live workers per queue, and since when the queue has had one without a break (the
    earliest start among them): time waited before that does not count against a run."""

    workers: dict[str, int] = field(default_factory=dict)
    since: dict[str, datetime] = field(default_factory=dict)
    checked_at: datetime | None = None

    def has_worker(self, queue: str) -> bool:
        return self.workers.get(queue, 0) > 0


def read(db: Session, heartbeat_s: float, now: datetime | None = None) -> QueueLiveness:
    now = now or utcnow()
    fresh_after = now - timedelta(seconds=heartbeat_s * STALE_FACTOR)
    rows = db.execute(
        select(WorkerHeartbeat.queues, WorkerHeartbeat.started_at).where(
            WorkerHeartbeat.seen_at >= fresh_after
        )
    ).all()
    workers = dict.fromkeys(QUEUES, 0)
    since: dict[str, datetime] = {}
    for queues, started in rows:
        for queue in filter(None, (q.strip() for q in queues.split(","))):
            workers[queue] = workers.get(queue, 0) + 1
            since[queue] = min(since.get(queue, started), started)
    return QueueLiveness(workers=workers, since=since, checked_at=now)


def beat(db: Session, values: dict[str, Any]) -> None:
    """Insert or refresh a worker's row (`values` holds every column but `id`); the caller
    commits."""
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(WorkerHeartbeat).values(id=new_id(), **values)
    db.execute(
        statement.on_conflict_do_update(
            index_elements=[WorkerHeartbeat.name], set_={"seen_at": statement.excluded.seen_at}
        )
    )


def forget(db: Session, name: str | None = None, *, older_than_s: float | None = None) -> int:
    """Remove one worker's row (a clean stop), or every row not seen for `older_than_s`."""
    statement = delete(WorkerHeartbeat)
    if name is not None:
        statement = statement.where(WorkerHeartbeat.name == name)
    if older_than_s is not None:
        statement = statement.where(
            WorkerHeartbeat.seen_at < utcnow() - timedelta(seconds=older_than_s)
        )
    return int(db.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
