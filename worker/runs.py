"""A run's life in the database: claimed once, heartbeats while it works, events in order,
one final status. PostgreSQL is the source of truth; the broker only says "look at run X".

Every transition is a conditional UPDATE (`WHERE status = ...`), so a duplicate message,
a re-queue racing a slow worker, or a cancel racing a claim settle to exactly one outcome.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from api.db import utcnow
from api.events import append_events
from api.liveness import QueueLiveness
from api.logs import get_logger
from api.models import CodeExecution, Message, MessageRole, Run, RunStatus, Visualization
from api.turns import run_queue
from worker.ticker import Ticker

log = get_logger("quarry.runs")
T = TypeVar("T")

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


DB_ERRORS = ("OperationalError", "InterfaceError", "PoolTimeout", "DatabaseError")
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0)  # ~15 s: a database restart


def is_database_outage(exc: BaseException) -> bool:
    """A connection-level database error (the server restarting, a dropped connection), from
    SQLAlchemy or from psycopg directly (the checkpointer)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return type(exc).__name__ in DB_ERRORS


def retrying(write: Callable[[], T], what: str) -> T:
    """Run `write` (which opens its own session, so a retry starts clean), again after a
    database outage, for up to ~15 s: a PostgreSQL restart must not throw away a turn's
    result. Callers make `write` safe to repeat (conditional updates, fresh rows)."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return write()
        except Exception as exc:
            if delay is None or not is_database_outage(exc):
                raise
            log.warning("database write retried", what=what, error=str(exc)[:200], wait_s=delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def claim(db: Session, run_id: uuid.UUID) -> Run | None:
    """queued -> running, once, with its `status` event. None when the run is unknown or
    someone else has it. A connection the database dropped (it restarted) is replaced and
    the claim tried once more; other database errors propagate, and the run stays queued."""
    try:
        return _claim(db, run_id)
    except DBAPIError as exc:
        db.rollback()
        if not exc.connection_invalidated:
            raise
        log.warning("claim retried on a new connection", run_id=str(run_id))
        return _claim(db, run_id)


def _claim(db: Session, run_id: uuid.UUID) -> Run | None:
    now = utcnow()
    claimed = db.scalars(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(
            status=RunStatus.RUNNING,
            started_at=func.coalesce(Run.started_at, now),
            heartbeat_at=now,
            attempts=Run.attempts + 1,
        )
        .returning(Run)
        .execution_options(populate_existing=True)
    ).first()
    if claimed is not None:  # says so in the same transaction
        status: dict[str, Any] = {"status": "running", "attempt": claimed.attempts}
        if claimed.attempts > 1:
            # Another try after a lost worker: what the lost attempt stored goes, so that the
            # answer shows only the code and charts of the attempt that made it.
            status["restarted"] = True
            for model in (Visualization, CodeExecution):
                db.execute(delete(model).where(model.run_id == claimed.id))
        append_events(db, claimed, ("status", status))
    db.commit()
    return claimed


@dataclass
class Outcome:
    """How a run ended: its final status, what the user reads, what the model cost and,
    for a turn that answered, the assistant's message (content and payload)."""

    status: RunStatus
    error: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    answer: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


def settle(factory: sessionmaker[Session], run: Run, outcome: Outcome) -> bool:
    """running -> a final status, for this attempt of the run only, with the answer (if
    any), the status and the run's last events in one transaction; through a database
    restart (the answer is computed: losing it would run the turn again). False when the run
    was settled elsewhere meanwhile (reaped, given to another attempt): its outcome stands."""

    def write() -> bool:
        with factory() as db:
            message = None
            if outcome.answer is not None and outcome.status == RunStatus.SUCCEEDED:
                message = Message(
                    user_id=run.user_id,
                    session_id=run.session_id,
                    run_id=run.id,
                    role=MessageRole.ASSISTANT,
                    content=outcome.answer or "(no answer)",
                    payload=outcome.payload,
                )
                db.add(message)
            settled = db.execute(
                update(Run)
                .where(
                    Run.id == run.id, Run.status == RunStatus.RUNNING, Run.attempts == run.attempts
                )
                .values(
                    status=outcome.status,
                    finished_at=utcnow(),
                    error=outcome.error,
                    model=outcome.model,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    cost_usd=round(outcome.cost_usd, 6),
                )
                .returning(Run.id)
            ).first()
            if settled is None:
                db.rollback()
                log.warning("run settled elsewhere", run_id=str(run.id))
                return False
            events: list[tuple[str, dict[str, Any]]] = []
            if message is not None:
                db.flush()
                answered: dict[str, Any] = {
                    "content": message.content,
                    "message_id": str(message.id),
                }
                if outcome.payload.get("suggestions"):
                    answered["suggestions"] = outcome.payload["suggestions"]
                events.append(("answer", answered))
            if outcome.error:
                events.append(("error", {"message": outcome.error}))
            done = {
                "status": outcome.status.value,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
            }
            append_events(db, run, *events, ("done", done))
            db.commit()
            return True

    return retrying(write, "settling the run")


def add_event(db: Session, run: Run, kind: str, payload: dict[str, Any]) -> None:
    """Append one event and commit."""
    append_events(db, run, (kind, payload))
    db.commit()


def emit_event(
    factory: sessionmaker[Session], run: Run, kind: str, payload: dict[str, Any]
) -> None:
    """Append one event in a session of its own, through a database outage."""

    def write() -> None:
        with factory() as db:
            add_event(db, run, kind, payload)

    retrying(write, f"event {kind}")


def is_cancel_requested(db: Session, run_id: uuid.UUID, attempt: int | None = None) -> bool:
    """Whether the run should stop: cancelled, settled by someone else, or (given the
    attempt that asks) no longer that attempt's to run, because the reaper took it back."""
    row = db.execute(
        select(Run.cancel_requested_at, Run.status, Run.attempts).where(Run.id == run_id)
    ).first()
    if row is None or row[0] is not None or row[1] in FINISHED:
        return True
    return attempt is not None and (row[1] != RunStatus.RUNNING or row[2] != attempt)


class Watch(Ticker):
    """While a run works: a heartbeat every `heartbeat_s`, and a look every `poll_s` for a
    cancel request (or the run settled by someone else), which calls `on_cancel` — and then
    again every `poll_s` until the run ends: a sandbox still being handed out when the
    request came (no child to kill yet) is killed at the next tick, not left to time out."""

    name = "quarry-run-watch"

    def __init__(
        self,
        factory: sessionmaker[Session],
        run_id: uuid.UUID,
        on_cancel: Callable[[], None],
        heartbeat_s: float = 5.0,
        poll_s: float = 0.5,
        attempt: int | None = None,
    ) -> None:
        super().__init__(poll_s)
        self._factory = factory
        self._run_id = run_id
        self._attempt = attempt
        self._on_cancel = on_cancel
        self._heartbeat_s = heartbeat_s
        self._elapsed = 0.0
        self._last_beat = 0.0
        self.cancelled = threading.Event()

    def tick(self) -> None:
        self._elapsed += self.every_s
        try:
            with self._factory() as db:
                if self._elapsed - self._last_beat >= self._heartbeat_s:
                    mine = [Run.id == self._run_id, Run.status == RunStatus.RUNNING]
                    if self._attempt is not None:
                        mine.append(Run.attempts == self._attempt)
                    db.execute(update(Run).where(*mine).values(heartbeat_at=utcnow()))
                    db.commit()
                    self._last_beat = self._elapsed
                if not self.cancelled.is_set() and is_cancel_requested(
                    db, self._run_id, self._attempt
                ):
                    self.cancelled.set()
        except Exception as exc:  # the database blinked: try again next tick
            log.warning("run watch failed", run_id=str(self._run_id), error=str(exc))
        if self.cancelled.is_set():
            try:
                self._on_cancel()
            except Exception as exc:  # the watch goes on: the next tick tries again
                log.warning("cancel failed", run_id=str(self._run_id), error=str(exc))


@dataclass(frozen=True)
class QueuedPolicy:
    """When a queued run counts as lost (see `reap`)."""

    claim_timeout_s: float  # unclaimed this long with its queue empty: the message was lost
    queued_timeout_s: float  # unclaimed this long while workers consumed its queue: failed
    max_resends: int


def reap(
    db: Session,
    *,
    stale_after_s: float,
    queued: QueuedPolicy,
    live: QueueLiveness,
    depths: dict[str, int | None],
    send: Callable[[Run], bool],
    max_attempts: int = 2,
) -> dict[str, int]:
    """Runs whose worker vanished (no heartbeat) go back to the queue once, then fail.

    Queued runs are looked at only while their queue has a live worker (`live`): time with
    no worker at all does not count (the user is told that nothing runs; the run starts
    when a worker does). A run unclaimed for `claim_timeout_s` since it was last sent, while
    the broker holds nothing for its queue (`depths`), lost its message (the broker was
    restarted or flushed, a worker died holding it, a claim failed after the message was
    taken): it is sent again, up to `max_resends` times, then failed. A run unclaimed for
    `queued_timeout_s` of worker time is failed whatever the broker holds. Duplicates are
    harmless: a claim is conditional, so a run never runs twice. Each change is conditional
    on what was read, so two reapers never both act on a run."""
    now = utcnow()
    counts = {"requeued": 0, "failed": 0}

    stale = db.scalars(
        select(Run).where(
            Run.status == RunStatus.RUNNING,
            Run.heartbeat_at < now - timedelta(seconds=stale_after_s),
        )
    ).all()
    for run in stale:
        retry = run.attempts < max_attempts
        values: dict[str, Any] = (
            {"status": RunStatus.QUEUED, "requeues": Run.requeues + 1, "enqueued_at": now}
            if retry
            else {
                "status": RunStatus.FAILED,
                "finished_at": now,
                "error": (
                    "The worker running this turn stopped responding "
                    f"({run.attempts} attempts); ask again."
                ),
            }
        )
        changed = db.execute(
            update(Run)
            .where(
                Run.id == run.id,
                Run.status == RunStatus.RUNNING,
                Run.heartbeat_at == run.heartbeat_at,
            )
            .values(**values)
            .returning(Run.id)
        ).first()
        db.commit()
        if changed is None:
            continue
        if retry:
            counts["requeued"] += 1
            add_event(db, run, "status", {"status": "queued", "reason": "worker lost; retrying"})
            send(run)
        else:
            counts["failed"] += 1
            _final_events(db, run, "failed", values["error"])

    waiting = db.scalars(
        select(Run).where(
            Run.status == RunStatus.QUEUED,
            func.coalesce(Run.enqueued_at, Run.created_at)
            < now - timedelta(seconds=queued.claim_timeout_s),
        )
    ).all()
    for run in waiting:
        queue = run_queue(run)
        if not live.has_worker(queue):
            continue
        sent = run.enqueued_at or run.created_at
        served = now - max(sent, live.since.get(queue, sent))
        error = None
        if served > timedelta(seconds=queued.queued_timeout_s):
            error = (
                f"No worker started this turn within {queued.queued_timeout_s:g} s although "
                "workers were running: they are busy with other work. Ask again later, or "
                "ask the operator for more workers."
            )
        elif depths.get(queue) != 0:
            continue  # the broker still holds messages for the queue (or cannot be read)
        elif run.requeues >= queued.max_resends:
            error = (
                f"Quarry handed this turn to the workers {run.requeues + 1} times and none "
                "started it; ask again, and tell the operator if this happens again."
            )
        values = (
            {"status": RunStatus.FAILED, "finished_at": now, "error": error}
            if error
            else {"requeues": Run.requeues + 1, "enqueued_at": now}
        )
        changed = db.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == RunStatus.QUEUED, Run.requeues == run.requeues)
            .values(**values)
            .returning(Run.id)
        ).first()
        db.commit()
        if changed is None:
            continue
        if error:
            counts["failed"] += 1
            _final_events(db, run, "failed", error)
        else:
            counts["requeued"] += 1
            log.info("lost run message sent again", run_id=str(run.id), resends=run.requeues + 1)
            send(run)
    return counts


def _final_events(db: Session, run: Run, status: str, error: str | None) -> None:
    events = [("error", {"message": error})] if error else []
    append_events(db, run, *events, ("done", {"status": status}))
    db.commit()
