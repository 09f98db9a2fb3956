"""What agent turns produce, addressed by their own ids: runs and visualizations."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select, update

from api.crud import get_owned
from api.db import utcnow
from api.deps import (
    AccessClaims,
    AppState,
    CurrentUser,
    PageDep,
    SessionDep,
    StateDep,
    authenticate,
    read_session,
)
from api.errors import Conflict
from api.events import append_events
from api.models import Run, RunEvent, RunStatus, Visualization
from api.routes.sessions import charts_page, visualization_public
from api.schemas import Page, RunPublic, VisualizationPublic
from api.turns import run_public, run_queue

router = APIRouter(prefix="/api")

_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "Not signed in"}}


@router.get(
    "/runs/{run_id}",
    tags=["runs"],
    summary="An agent turn: status, timings, token usage and cost",
    responses={**_ERRORS, 404: {"description": "No such run (or not yours)"}},
)
async def get_run(
    run_id: uuid.UUID, db: SessionDep, user: CurrentUser, state: StateDep
) -> RunPublic:
    return run_public(state, get_owned(db, Run, run_id, user.id, "Run"))


@router.get(
    "/visualizations",
    tags=["visualizations"],
    summary="Your charts across all your sessions, newest first",
    responses=_ERRORS,
)
async def list_visualizations(
    db: SessionDep, user: CurrentUser, params: PageDep, include_figure: bool = True
) -> Page[VisualizationPublic]:
    return charts_page(db, user.id, params, include_figure)


@router.get(
    "/visualizations/{visualization_id}",
    tags=["visualizations"],
    summary="One chart as Plotly figure JSON",
    responses={**_ERRORS, 404: {"description": "No such visualization (or not yours)"}},
)
async def get_visualization(
    visualization_id: uuid.UUID, db: SessionDep, user: CurrentUser
) -> VisualizationPublic:
    viz = get_owned(db, Visualization, visualization_id, user.id, "Visualization")
    return visualization_public(viz)


POLL_S = 0.2  # without notifications (SQLite, or the listener reconnecting)
NOTIFIED_POLL_S = 2.0  # with them: only a safety net
HEARTBEAT_S = 15.0


def _events_after(
    state: AppState, run_id: uuid.UUID, after: int
) -> tuple[list[RunEvent], RunStatus | None]:
    """The run's events after `after`, and its status (None: the run is gone). Called in a
    thread holding a `read_gate` slot; the connection goes back to the pool on return, so
    a stream holds none while it waits."""
    with state.read_sessionmaker() as db:
        events = list(
            db.scalars(
                select(RunEvent)
                .where(RunEvent.run_id == run_id, RunEvent.seq > after)
                .order_by(RunEvent.seq)
                .limit(200)
            )
        )
        status_ = db.scalar(select(Run.status).where(Run.id == run_id))
        db.expunge_all()
    return events, None if status_ is None else RunStatus(status_)


def _frame(event: RunEvent) -> bytes:
    data = {
        "seq": event.seq,
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "payload": event.payload,
    }
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), orjson.dumps(data))


def _notice(seq: int, message: str) -> bytes:
    """A message for the follower that is not one of the run's events: no `id:` line (a
    resumed stream is not moved past anything) and `seq` repeats the last event's."""
    data = {
        "seq": seq,
        "type": "notice",
        "created_at": utcnow().isoformat(),
        "payload": {"level": "warning", "reason": "no_worker", "message": message},
    }
    return b"event: notice\ndata: %s\n\n" % orjson.dumps(data)


@router.get(
    "/runs/{run_id}/events",
    tags=["runs"],
    summary="The turn's steps as Server-Sent Events (plan, code, result, chart, answer, done)",
    description="Resumable: send `Last-Event-ID` (or `?after=`) to get only what came later. "
    "The stream ends after the `done` event; a comment line every 15 s keeps proxies open. "
    "Events come from the database, so any API replica can serve any run. While the run "
    "waits for a worker and none is running, a `notice` event (no `id`) says so.",
    responses={
        **_ERRORS,
        200: {"content": {"text/event-stream": {}}},
        404: {"description": "No such run (or not yours)"},
    },
    response_class=StreamingResponse,
)
async def run_events(
    run_id: uuid.UUID,
    request: Request,
    state: StateDep,
    claims: AccessClaims,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this event id")] = None,
    follow: Annotated[
        bool, Query(description="Wait for new events until the run ends (false: what exists now)")
    ] = True,
) -> StreamingResponse:
    # Who asks and whether the run is theirs, on a connection given back before streaming:
    # a stream holds no pooled connection, only one per read, between its waits.
    async with state.read_gate:
        db = await read_session(state)
        try:
            user = await authenticate(request, db, claims)
            run = get_owned(db, Run, run_id, user.id, "Run")
            queue, created = run_queue(run), run.created_at
        finally:
            db.close()
    start = after or 0
    resume = (last_event_id or "").strip()
    if resume.isascii() and resume.isdigit():  # ('²' is a digit to str.isdigit())
        start = max(start, int(resume))

    async def stream() -> AsyncIterator[bytes]:
        with state.notifier.subscribe(run_id) as woken:
            async for chunk in _follow(woken):
                yield chunk

    async def _follow(woken: asyncio.Event) -> AsyncIterator[bytes]:
        seq = start
        beat = time.monotonic()
        settled_polls = 0
        told_waiting = False
        yield b"retry: 2000\n\n"
        while not await request.is_disconnected():
            woken.clear()  # before reading: a notification from now on wakes the wait below
            async with state.read_gate:
                events, status_ = await run_in_threadpool(_events_after, state, run_id, seq)
            finished = status_ is None or status_.finished
            for event in events:
                yield _frame(event)
                seq = event.seq
                beat = time.monotonic()
                if event.type == "done":
                    return
            if not events and not follow:
                return
            waiting = None
            if status_ == RunStatus.QUEUED:
                waiting = state.monitor.waiting(queue, since=created)
            if waiting and not told_waiting:
                yield _notice(seq, waiting)
                beat = time.monotonic()
            told_waiting = waiting is not None
            if finished and not events:
                settled_polls += 1
                if settled_polls >= 3:  # finished without a done event (very old runs)
                    return
            if time.monotonic() - beat >= HEARTBEAT_S:
                yield b": heartbeat\n\n"
                beat = time.monotonic()
            if not events:
                wait = NOTIFIED_POLL_S if state.notifier.listening else POLL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(wait, HEARTBEAT_S))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/runs/{run_id}/cancel",
    tags=["runs"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Stop a turn and its sandbox",
    responses={
        **_ERRORS,
        404: {"description": "No such run (or not yours)"},
        409: {"description": "The run has already finished"},
    },
)
def cancel_run(run_id: uuid.UUID, db: SessionDep, user: CurrentUser) -> RunPublic:
    run = get_owned(db, Run, run_id, user.id, "Run")
    if run.status.finished:
        raise Conflict(f"The run has already finished ({run.status.value}).")
    now = utcnow()
    db.execute(
        update(Run)
        .where(Run.id == run.id, Run.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now)
    )
    # Not started yet: settle it here (the worker's claim then finds nothing to do).
    settled = db.execute(
        update(Run)
        .where(Run.id == run.id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.CANCELLED, finished_at=now, error="Cancelled by the user.")
        .returning(Run.id)
    ).first()
    if settled is not None:
        append_events(
            db,
            run,
            ("error", {"message": "Cancelled by the user."}),
            ("done", {"status": "cancelled"}),
        )
    db.commit()
    db.refresh(run)
    return RunPublic.model_validate(run)
