"""Run events: the ordered steps of a turn that `GET /api/runs/{id}/events` streams.
Whoever settles a run appends them (a worker; the API for a run cancelled before it
started); each run has one writer at a time, which numbers them 1, 2, 3..."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from api.db import new_id, utcnow
from api.models import Run, RunEvent
from api.notify import notify_run

# The next number is computed by the INSERT itself; one statement per event (batched into
# one multi-row INSERT they would all see the same maximum). Built once: SQLAlchemy caches
# its compiled form, which a fresh statement per call would compile again (~2 ms).
_NEXT_SEQ = (
    select(func.coalesce(func.max(RunEvent.seq), 0) + 1)
    .where(RunEvent.run_id == bindparam("of_run"))
    .scalar_subquery()
)
_INSERT = insert(RunEvent).values(seq=_NEXT_SEQ)


def append_events(db: Session, run: Run, *events: tuple[str, dict[str, Any]]) -> None:
    """Add events after the run's last one; the caller commits, and the run's streams are
    woken when it does. (On the hot path of every turn: no read-then-write round trip and
    no ORM unit of work.)"""
    if not events:
        return
    now = utcnow()
    for kind, payload in events:
        db.execute(
            _INSERT,
            {
                "id": new_id(),
                "run_id": run.id,
                "of_run": run.id,
                "user_id": run.user_id,
                "type": kind,
                "payload": payload,
                "created_at": now,
            },
        )
    notify_run(db, run.id)
