"""One agent turn, end to end, in a worker process: claim the run, run the graph with the
session's checkpoint thread, stream events, store the answer, settle the run.

The per-process `WorkerContext` is in worker/context.py, the history a turn starts from in
worker/history.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from sqlalchemy import select

from api.logs import get_logger
from api.models import Message, MessageRole, Run, RunStatus
from worker import metrics, runs
from worker.agent import context as session_context
from worker.agent import graph as agent_graph
from worker.agent.llm import cost_usd, model_name
from worker.agent.llm import error_text as llm_error_text
from worker.agent.offline import KEY as OFFLINE_KEY
from worker.agent.tools import Tools
from worker.context import WorkerContext, get_context
from worker.history import direct_executions_note, history_from_messages

log = get_logger("quarry.turn")


def _error_text(exc: BaseException) -> str:
    """What the user reads when a turn stops on an exception: what happened and what to do,
    never a traceback or a driver's message (those go to the worker log with the run id)."""
    if runs.is_database_outage(exc):
        return "Quarry's database stopped answering during this turn; ask again in a moment."
    return llm_error_text(exc) or (
        "The agent stopped on an unexpected error; ask again. If it happens again, the "
        "worker's log has the details under this run's id."
    )


Emit = Callable[[str, dict[str, Any]], None]


def _tools_for(
    ctx: WorkerContext, run: Run, session: session_context.SessionContext
) -> tuple[Emit, Tools]:
    """The run's event writer, and its tools (sandbox runs stored under the run)."""

    def emit(kind: str, payload: dict[str, Any]) -> None:
        runs.emit_event(ctx.factory, run, kind, payload)

    tools = Tools(
        settings=ctx.settings,
        factory=ctx.factory,
        context=session,
        backend=ctx.backend,
        run_id=run.id,
        emit=emit,
    )
    return emit, tools


def _start_sandbox(ctx: WorkerContext) -> None:
    """The sandbox backend, started before the model's first call: a docker pool warms its
    containers while the model thinks. One that cannot start says so when a snippet needs
    it (the tool's answer), not here."""
    try:
        ctx.backend()
    except Exception as exc:  # never the turn's failure: the snippet that needs it says why
        log.warning("sandbox unavailable", error=f"{type(exc).__name__}: {exc}")


def _watch(ctx: WorkerContext, run: Run) -> runs.Watch:
    """Heartbeats while the run works; a cancel request (or the reaper taking the run back
    from this attempt) kills its sandbox."""
    beat = ctx.settings.run_heartbeat_s
    return runs.Watch(
        ctx.factory,
        run.id,
        on_cancel=ctx.terminate_sandbox,
        heartbeat_s=beat,
        attempt=run.attempts,
    )


class ClaimFailed(Exception):
    """The database could not be asked whether the run is ours: the run stays queued, and the
    task is tried again (the reaper would also send it again)."""


def claim(ctx: WorkerContext, run_id: uuid.UUID) -> Run | None:
    try:
        with ctx.factory() as db:
            return runs.claim(db, run_id)
    except Exception as exc:
        raise ClaimFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from exc


class _Prepared:
    def __init__(self, session: session_context.SessionContext, messages: list[BaseMessage],
                 config: dict[str, Any]) -> None:  # fmt: skip
        self.session, self.messages, self.config = session, messages, config


def _prepare_turn(ctx: WorkerContext, run: Run) -> _Prepared | str:
    """What the graph needs: the session, the messages to add, the checkpoint thread. A
    string says why the turn cannot run."""
    settings = ctx.settings
    with ctx.factory() as db:
        question = db.scalar(
            select(Message)
            .where(Message.run_id == run.id, Message.role == MessageRole.USER)
            .order_by(Message.created_at)
            .limit(1)
        )
        if question is None:
            return "The run has no question."
        session = session_context.load(db, settings, run.session_id, run.user_id)
        config: dict[str, Any] = {
            "configurable": {"thread_id": str(run.session_id)},
            "recursion_limit": 2 * settings.agent_max_tool_calls + 6,
        }
        rebuilt: list[BaseMessage] = []
        # (the latest checkpoint's row only: rebuilding the state to look would replay the
        # whole conversation, which the turn itself does once more)
        if not ctx.has_checkpoint(config):
            rebuilt = history_from_messages(db, run.session_id, question)
        note = direct_executions_note(db, question)
        if note is not None:
            rebuilt.append(note)
        human = HumanMessage(content=question.content, id=str(question.id))
    return _Prepared(session, [*rebuilt, human], config)


def _unexpected(exc: BaseException, what: str) -> str:
    if runs.is_database_outage(exc):
        return f"Quarry's database did not answer while {what}; ask again in a moment."
    return (
        f"The agent stopped on an unexpected error while {what}; ask again. If it happens "
        "again, the worker's log has the details under this run's id."
    )


def run_turn(run_id: uuid.UUID, ctx: WorkerContext | None = None) -> str:
    """Returns the run's final status (or "skipped" when it was not ours to run). Once the
    run is claimed, whatever happens ends it with a status and a readable error."""
    ctx = ctx or get_context()
    settings = ctx.settings
    started = time.perf_counter()
    run = claim(ctx, run_id)
    if run is None:
        log.info("run not claimable", run_id=str(run_id))
        return "skipped"
    name = model_name(settings)
    try:
        prepared = _prepare_turn(ctx, run)
        graph = ctx.graph()
    except Exception as exc:
        log.exception("turn could not start", run_id=str(run.id))
        prepared = _unexpected(exc, "starting the turn")
    if isinstance(prepared, str):
        _settle(ctx, run, RunStatus.FAILED, prepared, name=name)
        _count("turn", RunStatus.FAILED, started)
        return RunStatus.FAILED.value

    emit, tools = _tools_for(ctx, run, prepared.session)
    _start_sandbox(ctx)
    status, error = RunStatus.FAILED, None
    answer: AIMessage | None = None
    usage: dict[str, int] = {}
    with _watch(ctx, run) as watch:
        turn = agent_graph.Turn(
            model=ctx.model(),
            model_name=name,
            tools=tools,
            context=prepared.session,
            max_tool_calls=settings.agent_max_tool_calls,
            max_fix_attempts=settings.agent_max_fix_attempts,
            history_messages=settings.agent_history_messages,
            emit=emit,
            cancelled=watch.cancelled.is_set,
        )
        try:
            # One checkpoint per turn, written when it ends: its messages go in as deltas
            # (DeltaChannel), so a turn writes what it added, whatever the history's length.
            # A turn cut short saves nothing and is re-run whole by the reaper.
            state = graph.invoke(
                {"messages": prepared.messages, "tool_calls": 0, "failures": 0},
                prepared.config,
                context=turn,
                durability="exit",
            )
            last = state["messages"][-1]
            answer = last if isinstance(last, AIMessage) else AIMessage(content=str(last.content))
            status = RunStatus.SUCCEEDED
        except agent_graph.Cancelled:
            status, error = RunStatus.CANCELLED, "Cancelled by the user."
        except Exception as exc:  # the soft time limit included: never leave it running
            ctx.terminate_sandbox()
            if watch.cancelled.is_set():
                status, error = RunStatus.CANCELLED, "Cancelled by the user."
            elif type(exc).__name__ == "SoftTimeLimitExceeded":
                error = f"The turn took longer than {settings.turn_time_limit_s} s and was stopped."
            else:
                error = _error_text(exc)
                log.exception("turn failed", run_id=str(run.id), error=str(exc))
        usage = turn.usage
    _settle(ctx, run, status, error, answer, usage, name, tools)
    _count("turn", status, started)
    return status.value


def run_execution(run_id: uuid.UUID, ctx: WorkerContext | None = None) -> str:
    """A direct execution: the user's code, run like the agent's (same sandbox, datasets,
    workspace and storage), without a model. Returns the run's final status."""
    ctx = ctx or get_context()
    settings = ctx.settings
    started = time.perf_counter()
    run = claim(ctx, run_id)
    if run is None:
        log.info("run not claimable", run_id=str(run_id))
        return "skipped"
    run_ref, code = run, run.code or ""
    try:
        with ctx.factory() as db:
            session = session_context.load(db, settings, run.session_id, run.user_id)
    except Exception as exc:
        log.exception("execution could not start", run_id=str(run.id))
        _settle(ctx, run, RunStatus.FAILED, _unexpected(exc, "starting the run"))
        _count("execution", RunStatus.FAILED, started)
        return RunStatus.FAILED.value

    _, tools = _tools_for(ctx, run_ref, session)
    status, error = RunStatus.FAILED, None
    with _watch(ctx, run_ref) as watch:
        try:
            # no column check: the user wants their code run and pandas' own error
            outcome = tools.run_python(code, check_columns=False)
            if watch.cancelled.is_set():
                status, error = RunStatus.CANCELLED, "Cancelled by the user."
            elif isinstance(outcome, str):
                error = outcome
            elif outcome.ok:
                status = RunStatus.SUCCEEDED
            else:
                found = outcome.result.get("error") or {}
                error = f"{found.get('type', 'Error')}: {found.get('message', '')}"
        except Exception as exc:  # the soft time limit included
            ctx.terminate_sandbox()
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                error = f"The code took longer than {settings.turn_time_limit_s} s and was stopped."
            else:
                error = f"The execution stopped on an unexpected error ({type(exc).__name__})."
                log.exception("execution failed", run_id=str(run_ref.id))
    _settle(ctx, run_ref, status, error, tools=tools)
    _count("execution", status, started)
    return status.value


def _count(kind: str, status: RunStatus, started: float) -> None:
    metrics.RUNS.labels(kind, status.value).inc()
    metrics.RUN_SECONDS.labels(kind).observe(time.perf_counter() - started)


def _settle(
    ctx: WorkerContext,
    run: Run,
    status: RunStatus,
    error: str | None,
    answer: AIMessage | None = None,
    usage: dict[str, int] | None = None,
    name: str | None = None,
    tools: Tools | None = None,
) -> None:
    """The run's outcome, stored by `runs.settle` (the one way a run ends)."""
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    outcome = runs.Outcome(
        status,
        error,
        model=name,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost_usd(ctx.settings, prompt, completion),
    )
    if answer is not None and status == RunStatus.SUCCEEDED:
        content = answer.content if isinstance(answer.content, str) else str(answer.content)
        executions = tools.executions if tools else []
        # questions the offline model offers instead of one it did not understand
        offered = (answer.additional_kwargs.get(OFFLINE_KEY) or {}).get("suggestions")
        suggested = [str(q)[:300] for q in offered or []][:8]
        outcome.answer = content or "(no answer)"
        outcome.payload = {
            "executions": [str(e.id) for e in executions],
            "visualizations": [c["visualization_id"] for e in executions for c in e.charts],
            **({"suggestions": suggested} if suggested else {}),
        }
    runs.settle(ctx.factory, run, outcome)
