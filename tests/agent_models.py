"""Scripted chat models for the agent tests: FAKE LLMs (no provider is reachable here),
built on langchain-core's fake chat model base. Real Celery workers load them through
`LLM_FACTORY=tests.agent_models:<name>`.

`memory` is the exam's critical model: it answers "Alice" only if "Alice" is in the
messages it receives, and repeats a mean age only if an earlier tool result holds it, so
a test using it fails whenever the history was not restored.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult


def _call(tool: str, **args: Any) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[{"name": tool, "args": args, "id": f"call_{uuid.uuid4().hex[:10]}"}],
    )


class ScriptedModel(GenericFakeChatModel):
    """A fake chat model whose reply is a function of the messages it receives."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(messages=iter(()), **kwargs)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:  # pragma: no cover
        raise NotImplementedError

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        message = self.reply(messages)
        message.usage_metadata = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
        return ChatResult(generations=[ChatGeneration(message=message)])


def _last_human(messages: Sequence[BaseMessage]) -> str:
    return next(str(m.content) for m in reversed(messages) if isinstance(m, HumanMessage))


class MemoryModel(ScriptedModel):
    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        last = messages[-1]
        question = _last_human(messages).lower()
        everything = "\n".join(str(m.content) for m in messages)
        if isinstance(last, ToolMessage):
            found = re.search(r"result: ([0-9.]+)", str(last.content))
            return AIMessage(content=f"The mean age is {found.group(1) if found else 'unknown'}.")
        if question.startswith("my name is"):
            return AIMessage(content="Nice to meet you.")
        if "my name" in question:
            return AIMessage(
                content="Your name is Alice." if "Alice" in everything else "I don't know."
            )
        if question.startswith("what was the mean age"):
            earlier = re.search(r"The mean age is ([0-9.]+)", everything)
            return AIMessage(content=f"It was {earlier.group(1)}." if earlier else "I don't know.")
        if "mean age" in question:
            return _call("run_python", code="round(float(df['age'].mean()), 2)")
        return AIMessage(content="?")


class ToolScriptModel(ScriptedModel):
    """Runs the question's text as a tool call (`describe:NAME`, `python:CODE`), then
    answers with the tool's result verbatim."""

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            return AIMessage(content="TOOL SAID: " + str(last.content))
        question = _last_human(messages)
        kind, _, rest = question.partition(":")
        if kind == "describe":
            return _call("describe_dataset", name=rest)
        if kind == "python":
            return _call("run_python", code=rest)
        if kind == "list":
            return _call("list_datasets")
        return AIMessage(content=json.dumps({"unknown": question}))


class StepsModel(ScriptedModel):
    """`steps:<JSON list of snippets>`: runs each snippet as its own tool call, in order
    (one per model call), then answers with what the last one said."""

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        question = _last_human(messages)
        steps = json.loads(question.partition(":")[2])
        start = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        done = [m for m in messages[start:] if isinstance(m, ToolMessage)]
        if len(done) < len(steps):
            return _call("run_python", code=steps[len(done)])
        return AIMessage(content="LAST TOOL SAID: " + str(done[-1].content))


def steps() -> StepsModel:
    return StepsModel()


def memory() -> MemoryModel:
    return MemoryModel()


def tool_script() -> ToolScriptModel:
    return ToolScriptModel()
