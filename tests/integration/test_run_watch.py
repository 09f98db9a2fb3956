"""The watch beside a running run: heartbeats, and a cancel request that keeps stopping the
sandbox until the run ends (real PostgreSQL; the sandbox stop is a counter here)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.db import utcnow
from api.models import Run, RunStatus
from tests.factories import Client
from worker.runs import Watch


def _running_run(client: Client, pg_engine: Engine) -> uuid.UUID:
    user = client.user()
    session = client.session(user)
    response = client.post(
        f"/api/sessions/{session['id']}/messages", headers=user.headers, json={"content": "hi"}
    )
    assert response.status_code == 202, response.text
    run_id = uuid.UUID(response.json()["run_id"])
    with Session(pg_engine) as db:
        db.execute(update(Run).where(Run.id == run_id).values(status=RunStatus.RUNNING))
        db.commit()
    return run_id


def _until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_cancel_stops_the_sandbox_again_until_the_run_ends(
    client: Client, pg_engine: Engine
) -> None:
    """A sandbox still being handed out when the cancel came has no child to kill yet: the
    next ticks kill it, so it does not run on to its timeout."""
    run_id = _running_run(client, pg_engine)
    stops: list[float] = []
    watch = Watch(sessionmaker(pg_engine), run_id, on_cancel=lambda: stops.append(1), poll_s=0.05)
    with watch:
        time.sleep(0.2)
        assert stops == []
        assert not watch.cancelled.is_set()
        with Session(pg_engine) as db:
            db.execute(update(Run).where(Run.id == run_id).values(cancel_requested_at=utcnow()))
            db.commit()
        _until(lambda: len(stops) >= 3)
        assert watch.cancelled.is_set()
    ended = len(stops)
    time.sleep(0.2)
    assert len(stops) == ended  # not after the run ended


def test_a_failing_stop_does_not_end_the_watch(client: Client, pg_engine: Engine) -> None:
    run_id = _running_run(client, pg_engine)
    calls: list[int] = []

    def stop() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("engine busy")

    with Session(pg_engine) as db:
        db.execute(update(Run).where(Run.id == run_id).values(cancel_requested_at=utcnow()))
        db.commit()
    with Watch(sessionmaker(pg_engine), run_id, on_cancel=stop, poll_s=0.05):
        _until(lambda: len(calls) >= 2)


def test_the_watch_beats_while_the_run_works(client: Client, pg_engine: Engine) -> None:
    run_id = _running_run(client, pg_engine)
    watch = Watch(
        sessionmaker(pg_engine), run_id, on_cancel=lambda: None, heartbeat_s=0.05, poll_s=0.05
    )
    with watch, Session(pg_engine) as db:
        _until(lambda: db.get(Run, run_id, populate_existing=True).heartbeat_at is not None)
