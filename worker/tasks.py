"""Celery tasks (routed by name to the queues of api/queue.py)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from api import liveness
from api.config import get_settings
from api.maintenance import purge_expired_tokens as purge
from api.models import Run
from api.queue import (
    CONVERT_UPLOAD,
    EXECUTE_CODE,
    PURGE_TOKENS,
    REAP_DATASETS,
    RUN_TURN,
    TASK_QUEUES,
    queue_depths,
    task_for,
)
from worker import datasets, metrics, runs
from worker.celery_app import app
from worker.context import get_context
from worker.turn import ClaimFailed, run_execution
from worker.turn import run_turn as execute_turn

_F = TypeVar("_F", bound=Callable[..., Any])


def task(name: str, *, logged_as: str | None = None, **options: Any) -> Callable[[_F], Any]:
    """A Celery task (bound, no result kept) whose log lines carry the API's request id (a
    message header) and, with `logged_as`, its first argument under that name; never the
    previous task's context."""

    def register(body: _F) -> Any:
        @functools.wraps(body)
        def logged(self: Any, *args: Any) -> Any:
            headers = (self.request.headers or {}) if self.request else {}
            structlog.contextvars.clear_contextvars()
            fields = {logged_as: args[0]} if logged_as and args else {}
            structlog.contextvars.bind_contextvars(
                request_id=headers.get("quarry_request_id"), **fields
            )
            return body(self, *args)

        return app.task(name=name, bind=True, ignore_result=True, **options)(logged)

    return register


CLAIM_RETRY_S = 2.0


def _claimed(task: Any, run: Callable[[uuid.UUID], str], run_id: str) -> str:
    """Run it; a claim the database could not answer (it is restarting) is tried again in
    a moment rather than dropped (the run is still queued)."""
    try:
        return run(uuid.UUID(run_id))
    except ClaimFailed as exc:
        structlog.get_logger("quarry.tasks").warning(
            "claim failed; retrying", run_id=run_id, error=str(exc)
        )
        raise task.retry(exc=exc, countdown=CLAIM_RETRY_S, max_retries=10) from exc


@task(RUN_TURN, logged_as="run_id")
def run_turn(self: Any, run_id: str) -> str:
    return _claimed(self, execute_turn, run_id)


@task(EXECUTE_CODE, logged_as="run_id")
def execute_code(self: Any, run_id: str) -> str:
    return _claimed(self, run_execution, run_id)


def _resend(task: str, object_id: uuid.UUID) -> bool:
    """A reaper's message; False when the broker is down (the next round sends it again)."""
    try:
        app.send_task(task, args=[str(object_id)], queue=TASK_QUEUES[task])
    except Exception:
        return False
    return True


def _counted(what: str, counts: dict[str, int]) -> dict[str, int]:
    for action, n in counts.items():
        if n:
            metrics.REAPED.labels(what, action).inc(n)
    return counts


@task("worker.tasks.reap_runs")
def reap_runs(self: Any) -> dict[str, int]:
    ctx = get_context()
    settings = ctx.settings

    def send(run: Run) -> bool:
        return _resend(task_for(run.kind), run.id)

    policy = runs.QueuedPolicy(
        claim_timeout_s=settings.run_claim_timeout_s,
        queued_timeout_s=settings.run_queued_timeout_s,
        max_resends=settings.run_max_resends,
    )
    with ctx.factory() as db:
        live = liveness.read(db, settings.worker_heartbeat_s)
        counts = runs.reap(
            db,
            stale_after_s=settings.run_stale_after_s,
            queued=policy,
            live=live,
            depths=queue_depths(settings, ctx.broker_client()),
            send=send,
        )
    return _counted("run", counts)


@task(CONVERT_UPLOAD, logged_as="upload_id", **datasets.time_limits(get_settings()))
def convert_upload(self: Any, upload_id: str) -> str:
    ctx = get_context()
    return datasets.convert_upload(upload_id, ctx.settings, ctx.factory)


@task(REAP_DATASETS)
def reap_datasets(self: Any) -> dict[str, int]:
    ctx = get_context()
    settings = ctx.settings

    def send(upload_id: uuid.UUID) -> bool:
        return _resend(CONVERT_UPLOAD, upload_id)

    with ctx.factory() as db:
        lost = datasets.LostPolicy(
            live=liveness.read(db, settings.worker_heartbeat_s),
            depth=queue_depths(settings, ctx.broker_client()).get("datasets"),
            claim_timeout_s=settings.run_claim_timeout_s,
            max_resends=settings.run_max_resends,
        )
        counts = datasets.reap(
            db,
            data_dir=settings.data_dir,
            stale_after_s=settings.run_stale_after_s,
            queued_timeout_s=settings.dataset_queued_timeout_s,
            send=send,
            lost=lost,
        )
    return _counted("dataset", counts)


@task(PURGE_TOKENS)
def purge_expired_tokens(self: Any) -> dict[str, int]:
    """Hourly (beat): expired refresh tokens and revoked access tokens answer nothing."""
    with get_context().factory() as db:
        return purge(db)
