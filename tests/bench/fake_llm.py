"""A FAKE OpenAI-compatible chat endpoint for load benchmarks (loopback only).

    python -m tests.bench.fake_llm --port 8599 [--min-s 1] [--max-s 3] [--seed 1]

The workers reach it as they would reach a real provider: OPENAI_BASE_URL=http://127.0.0.1:
PORT/v1 and any OPENAI_API_KEY, through langchain-openai's ChatOpenAI (the product's own
code path: its HTTP client and connection pool, JSON tool calls, token usage and cost).
No model runs: each `POST /v1/chat/completions` sleeps a uniformly random 1-3 s (the
flags), then
- when the last message is not a tool result and tools are offered: asks for ONE
  `run_python` call over the session's first dataset (`df`, which the agent always binds);
- otherwise: answers in one sentence quoting the start of the tool's result.
`stream: true` is answered as SSE chunks (with a usage chunk when asked for).

`GET /stats` returns what it did: calls, calls in flight now and at most, and the sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

CODE = (
    'df.groupby("education")["income"].mean().round(1).to_dict() '
    'if {"education", "income"} <= set(df.columns) else df.shape'
)


class Fake:
    def __init__(self, min_s: float, max_s: float, seed: int) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.random = random.Random(seed)
        self.calls = 0
        self.tool_calls = 0
        self.answers = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.sleeps: list[float] = []
        self.started = time.time()

    def reply(self, body: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, int]]:
        """(the assistant message, finish reason, usage)."""
        messages = body.get("messages") or []
        last = messages[-1] if messages else {}
        prompt_tokens = max(1, len(json.dumps(messages)) // 4)
        if body.get("tools") and last.get("role") != "tool":
            self.tool_calls += 1
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {"name": "run_python", "arguments": json.dumps({"code": CODE})},
                    }
                ],
            }
            return message, "tool_calls", _usage(prompt_tokens, 30)
        self.answers += 1
        content = str(last.get("content") or "")
        text = " ".join(content.split())[:160]
        answer = f"Here is what the data says: {text or 'nothing came back'}."
        return {"role": "assistant", "content": answer}, "stop", _usage(prompt_tokens, 40)

    def stats(self) -> dict[str, Any]:
        s = sorted(self.sleeps)
        return {
            "calls": self.calls,
            "tool_calls": self.tool_calls,
            "answers": self.answers,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "sleep_s": {
                "min": round(s[0], 3) if s else None,
                "mean": round(statistics.fmean(s), 3) if s else None,
                "max": round(s[-1], 3) if s else None,
            },
            "configured_s": [self.min_s, self.max_s],
            "uptime_s": round(time.time() - self.started, 1),
        }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def build_app(fake: Fake) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def completions(request: Request) -> Response:
        body = await request.json()
        fake.calls += 1
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            delay = fake.random.uniform(fake.min_s, fake.max_s)
            fake.sleeps.append(delay)
            await asyncio.sleep(delay)
            message, finish, usage = fake.reply(body)
        finally:
            fake.in_flight -= 1
        ident, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.get("model")
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                    ],
                    "usage": usage,
                }
            )
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def chunks() -> AsyncIterator[bytes]:
            def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
                data = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": choices,
                    **extra,
                }
                return b"data: " + json.dumps(data).encode() + b"\n\n"

            delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": 0, **c} for c in message["tool_calls"]]
            yield chunk([{"index": 0, "delta": delta, "finish_reason": None}])
            yield chunk([{"index": 0, "delta": {}, "finish_reason": finish}])
            if with_usage:
                yield chunk([], usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def stats(_request: Request) -> Response:
        return JSONResponse(fake.stats())

    async def models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/stats", stats),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import uvicorn

    fake = Fake(args.min_s, args.max_s, args.seed)
    uvicorn.run(
        build_app(fake),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
