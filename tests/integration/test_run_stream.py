"""The run-event stream wakes on PostgreSQL notifications, not on its polling timer.

The polling fallback is pushed out to minutes here, so a stream that ends promptly after a
writer in another connection appended `done` can only have been woken by the notification.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.config import Settings
from api.events import append_events
from api.main import create_app
from api.models import Run
from api.routes import results
from tests.factories import Client


def _write(engine: Engine, run_id: str, *events: tuple[str, dict[str, Any]]) -> None:
    with Session(engine) as db:
        run = db.scalar(select(Run).where(Run.id == uuid.UUID(run_id)))
        assert run is not None
        append_events(db, run, *events)
        db.commit()


def test_a_following_stream_gets_events_as_they_are_committed(
    client: Client, pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "POLL_S", 600.0)
    monkeypatch.setattr(results, "NOTIFIED_POLL_S", 600.0)
    monkeypatch.setattr(results, "HEARTBEAT_S", 600.0)
    user = client.user()
    session_id = client.session(user)["id"]
    run_id = client.post(
        f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": "hi"}
    ).json()["run_id"]

    got: dict[str, Any] = {}

    def follow() -> None:
        got["text"] = client.get(f"/api/runs/{run_id}/events", headers=user.headers).text

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(1.0)  # the stream is open and waiting (nothing to read yet)
    assert reader.is_alive()
    _write(pg_engine, run_id, ("status", {"status": "running"}))
    _write(pg_engine, run_id, ("answer", {"content": "hello"}), ("done", {"status": "succeeded"}))
    reader.join(30)
    assert not reader.is_alive(), "the stream was not woken by the notification"
    frames = [json.loads(x[5:]) for x in got["text"].splitlines() if x.startswith("data:")]
    assert [f["type"] for f in frames] == ["status", "answer", "done"]
    assert [f["seq"] for f in frames] == [1, 2, 3]


def test_a_rolled_back_write_wakes_nobody_and_sends_nothing(
    client: Client, pg_engine: Engine
) -> None:
    user = client.user()
    session_id = client.session(user)["id"]
    run_id = client.post(
        f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": "hi"}
    ).json()["run_id"]
    with Session(pg_engine) as db:
        run = db.get(Run, uuid.UUID(run_id))
        assert run is not None
        append_events(db, run, ("answer", {"content": "never"}))
        db.rollback()
    text = client.get(f"/api/runs/{run_id}/events?follow=false", headers=user.headers).text
    assert "never" not in text


def test_without_listening_the_stream_polls(settings: Settings, pg_engine: Engine) -> None:
    """RUN_EVENTS_LISTEN=false (a pooler that cannot hold a LISTEN): streams still end."""
    app = create_app(settings.model_copy(update={"run_events_listen": False}))
    with TestClient(app) as http:
        client = Client(http)
        user = client.user()
        session_id = client.session(user)["id"]
        run_id = client.post(
            f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": "hi"}
        ).json()["run_id"]
        assert app.state.quarry.notifier.enabled is False
        timer = threading.Timer(0.5, _write, (pg_engine, run_id, ("done", {"status": "x"})))
        timer.start()
        text = client.get(f"/api/runs/{run_id}/events", headers=user.headers).text
        timer.join()
    assert '"type":"done"' in text.replace(" ", "")
