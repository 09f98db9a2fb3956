"""The agent: a LangGraph graph, the model with tools bound <-> tool execution, until an
answer or the per-turn tool-call cap.

State holds messages only (and two per-turn counters): no DataFrames, tables or figures.
Messages live in a DeltaChannel, so each checkpoint stores the messages a step added, not
the whole conversation again (LangGraph's default channel rewrites the full history at
every step: checkpoints then grow with the square of the conversation).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime

from worker import metrics
from worker.agent.context import SessionContext
from worker.agent.offline import OfflineChatModel
from worker.agent.tools import TOOL_SPECS, Tools


class Trimmed:
    """The messages reducer: add_messages over a batch of writes, keeping the newest `keep`.

    The model is only ever sent the last AGENT_HISTORY_MESSAGES, so older messages in the
    state are dead weight that every periodic snapshot of the channel would copy again;
    bounded, a snapshot costs the same in turn 500 as in turn 50. The conversation itself
    stays whole in the Message table. Deterministic and batching-invariant, as DeltaChannel
    requires: every message carries an id, writes only append, and keeping the newest
    `keep` after each batch equals keeping them after all.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep

    def __call__(self, state: list[AnyMessage], batches: Sequence[Any]) -> list[AnyMessage]:
        for batch in batches:
            state = add_messages(state, batch)  # type: ignore[arg-type,assignment]
        return state[-self.keep :] if len(state) > self.keep else state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trimmed) and other.keep == self.keep

    def __hash__(self) -> int:
        return hash(("Trimmed", self.keep))


class TurnState(TypedDict, total=False):
    messages: list[AnyMessage]  # a DeltaChannel of Trimmed messages: see state_schema()
    tool_calls: int  # made in this turn
    failures: int  # consecutive failed tool calls in this turn


def state_schema(keep: int) -> Any:
    """TurnState with its message channel: the newest `keep` messages, stored as deltas
    (each checkpoint holds the messages a turn added, plus a bounded snapshot now and then)."""
    channel: DeltaChannel[list[AnyMessage]] = DeltaChannel(Trimmed(keep), snapshot_frequency=50)
    return TypedDict(  # type: ignore[operator]
        "TurnState",
        {
            "messages": Annotated[list[AnyMessage], channel],
            "tool_calls": int,
            "failures": int,
        },
        total=False,
    )


class Cancelled(Exception):
    """The user cancelled the run."""


@dataclass
class Turn:
    """What the nodes need for one turn (LangGraph's runtime context; never checkpointed)."""

    model: BaseChatModel
    model_name: str
    tools: Tools
    context: SessionContext
    max_tool_calls: int
    max_fix_attempts: int
    history_messages: int
    emit: Callable[[str, dict[str, Any]], None]
    cancelled: Callable[[], bool]
    usage: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("prompt_tokens", "completion_tokens", "llm_calls", "llm_ms"), 0
        )
    )
    audited: bool = False


def new_id() -> str:
    return str(uuid.uuid4())


def sanitize(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """A history any provider accepts: tool calls only with all their results, and tool
    results only after their call (a turn cut short by a crash leaves halves)."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    out: list[BaseMessage] = []
    open_calls: set[str] = set()
    for m in messages:
        if isinstance(m, AIMessage) and m.tool_calls:
            ids = {str(c["id"]) for c in m.tool_calls if c.get("id")}
            if not ids <= answered:
                if m.content:
                    out.append(AIMessage(content=m.content, id=m.id))
                continue
            open_calls |= ids
        elif isinstance(m, ToolMessage) and m.tool_call_id not in open_calls:
            continue
        out.append(m)
    return out


def window(messages: Sequence[BaseMessage], limit: int) -> list[BaseMessage]:
    """The last `limit` messages, starting at a user message (never mid tool exchange)."""
    if len(messages) <= limit:
        return list(messages)
    tail = list(messages[-limit:])
    for i, m in enumerate(tail):
        if isinstance(m, HumanMessage):
            return tail[i:]
    return tail[-1:]


def call_model(state: TurnState, runtime: Runtime[Turn]) -> dict[str, Any]:
    turn = runtime.context
    if turn.cancelled():
        raise Cancelled
    history = window(sanitize(state.get("messages", [])), turn.history_messages)
    prompt: list[BaseMessage] = [SystemMessage(turn.context.system_prompt()), *history]
    model: Any = turn.model
    used = state.get("tool_calls", 0)
    failures = state.get("failures", 0)
    if used >= turn.max_tool_calls:
        prompt.append(
            SystemMessage(
                f"You have used all {turn.max_tool_calls} tool calls for this question: "
                "answer now with what you have, and say what is left undone."
            )
        )
    elif failures > turn.max_fix_attempts:
        prompt.append(
            SystemMessage(
                f"The last {failures} tool calls failed: stop retrying, tell the user what "
                "went wrong and what they could try."
            )
        )
    else:
        try:
            model = turn.model.bind_tools(TOOL_SPECS)
        except NotImplementedError:
            model = turn.model
    if not turn.audited:  # the privacy audit: what data this turn shows the model
        turn.audited = True
        turn.emit(
            "llm_input",
            {
                "model": turn.model_name,
                "system_prompt": prompt[0].content,
                "history_messages": len(history),
                "datasets": [
                    {"name": d.name, "sample_rows_shared": d.share_samples}
                    for d in turn.context.datasets
                ],
            },
        )
    # Quarry's offline model runs here, in the worker: it may read the datasets' whole
    # profiles (their values, to recognise "Japan" in a question); an external model only
    # ever sees the prompt.
    local = (
        {"local_profiles": {d.variable: d.profile for d in turn.context.datasets}}
        if isinstance(turn.model, OfflineChatModel)
        else {}
    )
    started = time.perf_counter()
    reply = model.invoke(prompt, **local)
    latency = time.perf_counter() - started
    if not isinstance(reply, AIMessage):
        reply = AIMessage(content=str(getattr(reply, "content", reply)))
    if reply.id is None:
        reply.id = new_id()
    usage: dict[str, Any] = dict(reply.usage_metadata or {})
    turn.usage["prompt_tokens"] += int(usage.get("input_tokens", 0))
    turn.usage["completion_tokens"] += int(usage.get("output_tokens", 0))
    turn.usage["llm_calls"] += 1
    turn.usage["llm_ms"] += int(latency * 1000)
    metrics.LLM_SECONDS.labels(turn.model_name).observe(latency)
    metrics.LLM_TOKENS.labels(turn.model_name, "prompt").inc(int(usage.get("input_tokens", 0)))
    metrics.LLM_TOKENS.labels(turn.model_name, "completion").inc(int(usage.get("output_tokens", 0)))
    capped = used >= turn.max_tool_calls or failures > turn.max_fix_attempts
    if reply.tool_calls and capped:
        # no tools were offered, yet it asked for some: the cap holds
        reply = AIMessage(
            content=reply.content
            or "I stopped here: the tool-call limit for one question was reached.",
            id=reply.id,
            usage_metadata=reply.usage_metadata,
        )
    if reply.tool_calls:
        for call in reply.tool_calls:
            call["id"] = call.get("id") or new_id()
        if isinstance(reply.content, str) and reply.content.strip():
            turn.emit("plan", {"content": reply.content})
    return {"messages": [reply]}


def call_tools(state: TurnState, runtime: Runtime[Turn]) -> dict[str, Any]:
    turn = runtime.context
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    results: list[ToolMessage] = []
    failed_any = False
    for call in last.tool_calls:
        if turn.cancelled():
            raise Cancelled
        answer = turn.tools.call(call["name"], call.get("args") or {}, call.get("id"))
        failed_any = failed_any or answer.failed
        results.append(
            ToolMessage(
                content=answer.text,
                artifact=answer.artifact,
                tool_call_id=call["id"],
                name=call["name"],
                id=new_id(),
                status="error" if answer.failed else "success",
            )
        )
    return {
        "messages": results,
        "tool_calls": state.get("tool_calls", 0) + len(last.tool_calls),
        "failures": state.get("failures", 0) + 1 if failed_any else 0,
    }


def route(state: TurnState) -> str:
    last = state["messages"][-1]
    if isinstance(last, AIMessage) and last.tool_calls:
        return "tools"
    return END


def build(checkpointer: Any, keep_messages: int = 200) -> Any:
    graph = StateGraph(state_schema(keep_messages), context_schema=Turn)
    graph.add_node("model", call_model)
    graph.add_node("tools", call_tools)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", route, {"tools": "tools", END: END})
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=checkpointer)
