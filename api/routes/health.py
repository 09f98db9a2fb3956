"""Liveness, readiness and Prometheus metrics (unauthenticated, outside /api)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import AppState, StateDep
from api.schemas import Health

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


def _checks(state: AppState) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    if state.redis is None:
        checks["broker"] = "embedded"
    else:
        try:
            state.redis.ping()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unavailable: {type(exc).__name__}"
    return checks


@router.get(
    "/readyz",
    summary="The database and the broker answer",
    responses={503: {"model": Health, "description": "A dependency is unavailable"}},
)
async def readyz(state: StateDep, response: Response) -> Health:
    # A probe must answer within its own timeout even when a dependency hangs (a dropped
    # packet holds a connect for seconds): past the deadline the check counts as failed.
    checks = {"database": "timeout", "broker": "timeout"}
    with anyio.move_on_after(READY_TIMEOUT_S):
        checks = await anyio.to_thread.run_sync(_checks, state, abandon_on_cancel=True)
    ready = all(v in {"ok", "embedded"} for v in checks.values())
    if not ready:
        response.status_code = 503
    return Health(status="ok" if ready else "unavailable", checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
