"""Starting agent turns: the limits a user meets, and the hand-off to the workers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.db import utcnow
from api.deps import AppState
from api.errors import TooManyRequests
from api.models import AnalysisSession, Run, RunKind, RunStatus
from api.queue import TASK_QUEUES, task_for
from api.schemas import RunPublic

ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


def check_limits(
    db: Session,
    state: AppState,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    *,
    uses_tokens: bool = True,
) -> None:
    """One active run per session, a few per user, a turn rate, and a daily token budget
    (for turns: a direct execution uses no tokens); each answers 429 with Retry-After and
    says what to do."""
    settings = state.settings
    # serialise turns of one session (PostgreSQL row lock; SQLite has one writer anyway)
    db.execute(select(AnalysisSession.id).where(AnalysisSession.id == session_id).with_for_update())
    busy = db.scalar(
        select(func.count())
        .select_from(Run)
        .where(Run.session_id == session_id, Run.status.in_(ACTIVE))
    )
    if busy:
        raise TooManyRequests(
            "This session is still busy with the previous question or code run; wait for it "
            "or cancel it (POST /api/runs/{id}/cancel).",
            5,
        )
    active = db.scalar(
        select(func.count()).select_from(Run).where(Run.user_id == user_id, Run.status.in_(ACTIVE))
    )
    if (active or 0) >= settings.max_active_runs_per_user:
        raise TooManyRequests(
            f"You already have {active} questions being answered (the limit is "
            f"{settings.max_active_runs_per_user}); wait for one to finish.",
            10,
        )
    key = f"turns:{user_id.hex}"
    if state.counter.hit(key, 60) > settings.turns_per_minute_per_user:
        retry = state.counter.retry_after(key, settings.turns_per_minute_per_user) or 60
        raise TooManyRequests(
            f"At most {settings.turns_per_minute_per_user} questions a minute; try again shortly.",
            retry,
        )
    if uses_tokens and settings.daily_token_budget_per_user:
        now = utcnow()
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
        used = db.scalar(
            select(func.coalesce(func.sum(Run.prompt_tokens + Run.completion_tokens), 0)).where(
                Run.user_id == user_id, Run.created_at >= midnight
            )
        )
        if int(used or 0) >= settings.daily_token_budget_per_user:
            retry = int((midnight.timestamp() + 86400) - now.timestamp())
            raise TooManyRequests(
                f"Today's budget of {settings.daily_token_budget_per_user} tokens is used up; "
                "it resets at midnight UTC.",
                retry,
            )


def enqueue_run(state: AppState, run: Run, request_id: str | None) -> None:
    """After the commit: the worker must find the run when the message arrives. A message
    that did not go out leaves the run queued; the reaper sends it again (measured from
    `created_at`, or `enqueued_at` once the reaper has sent it)."""
    state.queue.send(task_for(run.kind), str(run.id), request_id=request_id)


def run_queue(run: Run) -> str:
    """The broker queue that carries the run's work."""
    return TASK_QUEUES[task_for(RunKind(run.kind).value)]


def run_public(state: AppState, run: Run) -> RunPublic:
    """The run, with why it is not starting when its queue has no live worker."""
    found = RunPublic.model_validate(run)
    if run.status == RunStatus.QUEUED:
        found.waiting = state.monitor.waiting(run_queue(run), since=run.created_at)
    return found
