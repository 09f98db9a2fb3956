"""Liveness, readiness and Prometheus metrics (unauthenticated, outside /api)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api import liveness
from api.deps import AppState, StateDep
from api.queue import QUEUES, queue_depths
from api.schemas import Health, QueueHealth

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


@router.get("/healthz", summary="The process is alive", response_model_exclude_none=True)
async def healthz() -> Health:
    return Health(status="ok")


def _checks(state: AppState) -> tuple[dict[str, str], dict[str, QueueHealth] | None]:
    checks: dict[str, str] = {}
    queues: dict[str, QueueHealth] | None = None
    try:
        with state.sessionmaker() as db:
            db.execute(text("SELECT 1"))
            checks["database"] = "ok"
            found = liveness.read(db, state.settings.worker_heartbeat_s)
        depths = queue_depths(state.settings, state.redis)
        queues = {
            q: QueueHealth(workers=found.workers.get(q, 0), depth=depths.get(q)) for q in QUEUES
        }
        for queue, health in queues.items():
            checks[f"workers:{queue}"] = (
                f"ok ({health.workers})" if health.workers else "no worker consumes this queue"
            )
    except Exception as exc:
        checks.setdefault("database", f"unavailable: {type(exc).__name__}")
    if state.redis is None:
        checks["broker"] = "embedded"
    else:
        try:
            state.redis.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unavailable: {type(exc).__name__}"
    return checks, queues


@router.get(
    "/readyz",
    summary="The database and the broker answer; whether each queue has a live worker",
    description="503 when the database or the broker does not answer. A queue with no live "
    "worker (no heartbeat for three WORKER_HEARTBEAT_S) makes the status `degraded` but keeps "
    "200: this API can still serve what is stored and tell users their work waits, so a "
    "readiness probe must not take it out of service for that (alert on the "
    "`quarry_queue_workers` metric instead).",
    responses={503: {"model": Health, "description": "A dependency is unavailable"}},
)
async def readyz(state: StateDep, response: Response) -> Health:
    # A probe must answer within its own timeout even when a dependency hangs (a dropped
    # packet holds a connect for seconds): past the deadline the check counts as failed.
    checks: dict[str, str] = {"database": "timeout", "broker": "timeout"}
    queues: dict[str, QueueHealth] | None = None
    with anyio.move_on_after(READY_TIMEOUT_S):
        checks, queues = await anyio.to_thread.run_sync(_checks, state, abandon_on_cancel=True)
    ready = all(checks.get(k) in {"ok", "embedded"} for k in ("database", "broker"))
    if not ready:
        response.status_code = 503
        return Health(status="unavailable", checks=checks, queues=queues)
    degraded = queues is None or any(q.workers == 0 for q in queues.values())
    return Health(status="degraded" if degraded else "ok", checks=checks, queues=queues)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
