"""Quarry's `offline` model: a deterministic chat model for people without an LLM key (and
the backbone of the end-to-end tests). No network: it parses the user's question into a
typed plan over the session's tables (`worker/agent/nlq/`), shows the plan in plain words,
and runs the pandas/plotly code the plan becomes through the same tools and sandbox as an
LLM's code.

Precision first: a question with a word it cannot place, or that leaves a choice open (which
summary of a repeating group?), is not answered with something else. The reply names the
words, offers "did you mean" for close column names and values, and suggests questions it
can answer. Follow-ups change the previous plan ("now only for 2012", "and the median?",
"as a line chart", "by month instead"). It also remembers a name the user gives.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from worker.agent.nlq import codegen, join, parse
from worker.agent.nlq import query as nlq_query
from worker.agent.nlq.schema import schema_line, tables

NAME = "offline"
KEY = "quarry_offline"
NEEDS_KEY = (
    "I'm Quarry's offline assistant, so I only understand common analysis requests "
    "(overview, columns, missing values, distribution of a column, counts by category, "
    "X vs Y, correlations, averages by group, top N, trends over time, a quick model). "
    "Set OPENAI_API_KEY (or OPENAI_BASE_URL for a local model) for free-form questions."
)

_NAME_STATED = re.compile(
    r"\b(?:my name is|call me|i am called|i'm called)\s+([A-Za-z][\w'-]*)", re.I
)
_NAME_ASKED = re.compile(r"\b(what(?:'s| is) my name|who am i|(?:know|remember) my name)\b", re.I)
_RECALL = re.compile(
    r"\b(what was|what were|what did|remind me|earlier|previous(?:ly)?|again|before)\b", re.I
)


def _variants(word: str) -> set[str]:
    base = word.lower().replace("_", " ").strip()
    out = {base, word.lower()}
    out |= {v[:-1] for v in list(out) if v.endswith("s") and len(v) > 3}
    out |= {v + "s" for v in list(out)}
    return out


def previous_query(messages: Sequence[BaseMessage]) -> nlq_query.Query | None:
    """The plan of the last answer in this conversation, for a follow-up to change."""
    for m in reversed(messages):
        if isinstance(m, AIMessage):
            saved = ((m.additional_kwargs or {}).get(KEY) or {}).get("query")
            if isinstance(saved, dict):
                try:
                    return nlq_query.Query.from_dict(saved)
                except (TypeError, ValueError):
                    return None
    return None


def not_understood(result: parse.NotUnderstood) -> str:
    parts = []
    if result.unknown:
        quoted = ", ".join(f"“{w}”" for w in result.unknown)
        parts.append(
            f"I did not understand {quoted}" + (f" ({result.reason})." if result.reason else ".")
        )
    elif result.reason:
        parts.append(f"I need one more detail: {result.reason}.")
    if result.did_you_mean:
        parts.append("Did you mean " + ", ".join(f"**{h}**" for h in result.did_you_mean) + "?")
    if result.suggestions:
        parts.append(
            "Questions I can answer here:\n" + "\n".join(f"- {s}" for s in result.suggestions)
        )
    parts.append(
        "(I'm Quarry's offline assistant. Set OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
        "model, for free-form questions.)"
    )
    return "\n\n".join(parts)


_LONG_DECIMAL = re.compile(r"-?\d+\.\d{5,}")


def _readable(cell: str) -> str:
    """A cell as a reader wants it: 46.66473988439307 -> 46.6647 (the stored result and
    its download keep every digit)."""
    if _LONG_DECIMAL.fullmatch(cell.strip()):
        return f"{float(cell):.4f}".rstrip("0").rstrip(".")
    return cell


def markdown_tables(tables: Sequence[dict[str, Any]]) -> str:
    """A run's tables (as its tool artifact carries them) as Markdown."""
    out: list[str] = []
    for table in tables:
        columns = [str(c) for c in table.get("columns") or []]
        if not columns:
            continue
        if out:
            out.append("")
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "---|" * len(columns))
        rows = table.get("rows") or []
        for row in rows:
            cells = ("" if v is None else _readable(str(v)) for v in row)
            out.append("| " + " | ".join(cells) + " |")
        more = int(table.get("total_rows") or 0) - len(rows)
        if more > 0:
            out.append(f"... ({more} more rows)")
    return "\n".join(out)


class OfflineChatModel(BaseChatModel):
    """Deterministic, network-free; tools are "bound" by name (it knows Quarry's three)."""

    @property
    def _llm_type(self) -> str:
        return "quarry-offline"

    def bind_tools(self, tools: Any, **kwargs: Any) -> OfflineChatModel:
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, **kwargs))])

    def respond(self, messages: Sequence[BaseMessage], **kwargs: Any) -> AIMessage:
        """The reply to the conversation so far. `local_profiles` (variable -> the dataset's
        profile), passed by the worker, lets it recognise values ("Japan" in `Origin`)."""
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            return self._after_tool(messages, last)
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        if not humans:
            return AIMessage(content="How can I help with your data?")
        if isinstance(last, SystemMessage):  # a limit was reached: answer with what there is
            return AIMessage(
                content="I could not finish this analysis within the limits of one question."
            )
        question = str(humans[-1].content)
        history = list(messages[:-1])

        stated = _NAME_STATED.search(question)
        if stated:
            name = stated.group(1)
            name = name[0].upper() + name[1:]
            return AIMessage(content=f"Nice to meet you, {name}! I'll remember your name.")
        if _NAME_ASKED.search(question):
            for m in reversed(humans[:-1]):
                found = _NAME_STATED.search(str(m.content))
                if found:
                    name = found.group(1)
                    return AIMessage(content=f"Your name is {name[0].upper() + name[1:]}.")
            return AIMessage(content="You haven't told me your name yet.")

        if _RECALL.search(question):
            earlier = self._recall(question, history)
            if earlier:
                return AIMessage(content=f"Earlier in this conversation: {earlier}")
        known = tables(schema_line(messages), kwargs.get("local_profiles"))
        if not known:
            return AIMessage(
                content="This session has no dataset yet: attach one, then ask me about it."
            )
        result = parse.understand(question, known, previous_query(history))
        if isinstance(result, parse.NotUnderstood):
            return AIMessage(
                content=not_understood(result),
                additional_kwargs={KEY: {"suggestions": result.suggestions}},
            )
        query = result.query
        table = join.rebuild(known, query.table, query.join)
        snippet = codegen.snippet(query, table)
        plan = query.words()
        return AIMessage(
            content=f"Plan: {plan}.",
            tool_calls=[
                {
                    "name": "run_python",
                    "args": {"code": snippet.code},
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "type": "tool_call",
                }
            ],
            additional_kwargs={KEY: {"plan": plan, "unit": snippet.unit, "query": query.to_dict()}},
        )

    def _recall(self, question: str, history: Sequence[BaseMessage]) -> str | None:
        words = set(re.findall(r"[a-z0-9_]{3,}", question.lower())) - {
            "what",
            "was",
            "were",
            "the",
            "did",
            "earlier",
            "again",
            "before",
            "remind",
            "previous",
            "you",
            "tell",
        }
        for m in reversed(history):
            if (
                isinstance(m, AIMessage)
                and not m.tool_calls
                and isinstance(m.content, str)
                and m.content
            ):
                text = m.content.lower()
                if words and all(any(v in text for v in _variants(w)) for w in words):
                    return m.content
        return None

    def _after_tool(self, messages: Sequence[BaseMessage], tool: ToolMessage) -> AIMessage:
        call = next(
            (m for m in reversed(messages) if isinstance(m, AIMessage) and m.tool_calls),
            None,
        )
        saved = ((call.additional_kwargs or {}).get(KEY) or {}) if call else {}
        plan = str(saved.get("plan") or "the result")
        header = plan[:1].upper() + plan[1:]
        result = tool.artifact if isinstance(tool.artifact, dict) else None
        if result is None or not result.get("ok"):  # not run, or failed: the text says why
            first = (str(tool.content).splitlines() or [""])[0]
            return AIMessage(content=f"{header}: I could not compute it. {first}")
        keep = {KEY: {"query": saved["query"]}} if "query" in saved else {}
        value = result.get("result")
        tables = markdown_tables(result.get("tables") or [])
        printed = str(result.get("stdout") or "").split("\n")[0]
        if value is not None and not tables:
            shown = value[1:-1] if len(value) > 1 and value[0] == value[-1] == "'" else value
            unit = str(saved.get("unit") or "")
            answer = f"{header}: **{shown}**{' ' + unit if unit else ''}."
            if printed:
                answer += f"\n\n{printed}"
            return AIMessage(content=answer, additional_kwargs=keep)
        body = "\n\n".join(p for p in (f"{header}:", printed, tables) if p)
        return AIMessage(content=body, additional_kwargs=keep)
