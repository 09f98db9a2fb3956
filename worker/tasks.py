"""Celery tasks (routed by name to the queues of api/queue.py)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from api.queue import RUN_TURN, TASK_QUEUES
from worker import runs
from worker.celery_app import app
from worker.turn import get_context
from worker.turn import run_turn as execute_turn


def _bind_request(task: Any, **fields: Any) -> None:
    """The API's request id (sent as a message header) on every log line of the task."""
    request_id = (task.request.headers or {}).get("quarry_request_id") if task.request else None
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, **fields)


@app.task(name=RUN_TURN, bind=True, ignore_result=True)
def run_turn(self: Any, run_id: str) -> str:
    _bind_request(self, run_id=run_id)
    return execute_turn(uuid.UUID(run_id))


@app.task(name="worker.tasks.reap_runs", ignore_result=True)
def reap_runs() -> dict[str, int]:
    ctx = get_context()
    settings = ctx.settings

    def send(run_id: uuid.UUID) -> bool:
        try:
            app.send_task(RUN_TURN, args=[str(run_id)], queue=TASK_QUEUES[RUN_TURN])
        except Exception:  # the broker is down: the next round sends it again
            return False
        return True

    with ctx.factory() as db:
        return runs.reap(
            db,
            stale_after_s=settings.run_stale_after_s,
            queued_timeout_s=settings.run_queued_timeout_s,
            send=send,
        )
