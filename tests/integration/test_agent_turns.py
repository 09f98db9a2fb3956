"""Agent turns run in this process (`worker.turn.run_turn` with its own WorkerContext):
real PostgreSQL, the real process sandbox and the offline model; the same code a Celery
worker runs (tests/test_agent_integration.py drives it through real worker processes)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from api.config import Settings
from tests.factories import Client, User
from worker.context import WorkerContext
from worker.turn import run_turn


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerContext]:
    ctx = WorkerContext(settings.model_copy(update={"sandbox_uid_base": 62000}))
    yield ctx
    ctx.close()


def _turn(
    client: Client, worker: WorkerContext, user: User, session_id: str, q: str
) -> list[dict[str, Any]]:
    response = client.post(
        f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": q}
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert run_turn(uuid.UUID(run_id), worker) == "succeeded"
    assert run_turn(uuid.UUID(run_id), worker) == "skipped"  # a redelivered message does nothing
    stream = client.get(f"/api/runs/{run_id}/events", headers=user.headers).text
    return [json.loads(line[5:]) for line in stream.splitlines() if line.startswith("data:")]


def _answer(events: list[dict[str, Any]]) -> str:
    return str(next(e["payload"]["content"] for e in events if e["type"] == "answer"))


def test_offline_turns_compute_remember_and_chart(client: Client, worker: WorkerContext) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    session_id = client.session(user, [dataset["id"]])["id"]

    assert "Alice" in _answer(_turn(client, worker, user, session_id, "My name is Alice"))
    events = _turn(client, worker, user, session_id, "What is the mean age?")
    assert _answer(events) == "Average age: **42.5**."
    assert [e["type"] for e in events if e["type"] != "llm_input"] == [
        "status", "plan", "code", "result", "answer", "done",
    ]  # fmt: skip
    events = _turn(client, worker, user, session_id, "average income by education")
    assert "| PhD | 95000.0 |" in _answer(events)
    assert any(e["type"] == "chart" for e in events)
    assert (
        _answer(_turn(client, worker, user, session_id, "What is my name?"))
        == "Your name is Alice."
    )
    recalled = _answer(_turn(client, worker, user, session_id, "what was the mean age?"))
    assert "42.5" in recalled
    events = _turn(client, worker, user, session_id, "python please: open a file")
    assert "OPENAI_API_KEY" in _answer(events)
