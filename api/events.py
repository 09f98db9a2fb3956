"""Run events: the ordered steps of a turn that `GET /api/runs/{id}/events` streams.
Whoever settles a run appends them (a worker; the API for a run cancelled before it
started); each run has one writer at a time, which numbers them 1, 2, 3..."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.models import Run, RunEvent


def append_events(db: Session, run: Run, *events: tuple[str, dict[str, Any]]) -> list[RunEvent]:
    """Add events after the run's last one; the caller commits."""
    last = db.scalar(
        select(func.coalesce(func.max(RunEvent.seq), 0)).where(RunEvent.run_id == run.id)
    )
    added = [
        RunEvent(
            run_id=run.id, user_id=run.user_id, seq=int(last or 0) + i, type=kind, payload=payload
        )
        for i, (kind, payload) in enumerate(events, start=1)
    ]
    db.add_all(added)
    return added
