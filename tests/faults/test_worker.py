"""Faults a worker must outlive: snippets that exhaust memory or burn CPU past the sandbox
timeout, and malformed messages in its Redis queue. After each, the SAME worker (same
main process, same prefork child) answers the next question.

Real: PostgreSQL, Redis (shared, a key prefix of its own), a Celery worker process with
beat, the process sandbox, the API (in process). FAKE: the LLM,
`tests.agent_models:tool_script`, which runs a `python:CODE` question as one sandbox tool
call and answers with the tool's output verbatim.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tests.faults.conftest import Ledger, answer_of, assert_readable

pytestmark = pytest.mark.slow


def _result_of(stack: Any, run_id: str) -> dict[str, Any]:
    with stack.engine.connect() as conn:
        payload = conn.execute(
            text("SELECT payload FROM run_events WHERE run_id = :r AND type = 'result'"),
            {"r": run_id},
        ).scalar()
    return dict(payload or {})


def _answers_next(stack: Any, ledger: Ledger, user: Any, session_id: str, n: int) -> float:
    """Asks `python:n * 7` and checks the answer; returns how long it took."""
    started = time.monotonic()
    asked = ledger.ask(stack, user, session_id, f"python:{n} * 7")
    assert asked.status_code == 202, asked.body
    run = stack.wait_run(user, str(asked.run_id), timeout=60)
    assert run["status"] == "succeeded", (run, stack.said())
    assert f"result: {n * 7}" in answer_of(stack, asked)
    return time.monotonic() - started


SNIPPETS = {
    "one huge allocation": ("x = bytearray(8 * 1024**3)\nlen(x)", "memory"),
    "a list that grows": (
        "x = []\nwhile True:\n    x.append(bytearray(16 * 1024**2))",
        "memory",
    ),
    "CPU past the timeout": ("while True:\n    pass", "longer than 3 s"),
}


def test_snippets_that_exhaust_memory_or_cpu_leave_the_worker_answering(
    fault_stack: Any,
) -> None:
    """One huge allocation, a list that grows past 512 MB, an endless loop past the 3 s
    timeout: each turn ends with the reason in words, and the same worker processes answer
    the next question. The LLM is the FAKE `tool_script` model."""
    stack = fault_stack(sandbox_timeout_s=3, sandbox_memory_mb=512)
    client = stack.start_api()
    worker = stack.start_worker(beat=True)
    user = client.user()
    session_id = str(client.session(user, [])["id"])
    ledger = Ledger()
    _answers_next(stack, ledger, user, session_id, 1)
    pids = stack.worker_pids(worker)

    timings = []
    for n, (what, (code, says)) in enumerate(SNIPPETS.items(), start=2):
        started = time.monotonic()
        asked = ledger.ask(stack, user, session_id, f"python:{code}")
        assert asked.status_code == 202, asked.body
        run = stack.wait_run(user, str(asked.run_id), timeout=60)
        took = time.monotonic() - started
        # the turn ran; the snippet did not: the answer says why, in words
        assert run["status"] == "succeeded", (what, run, stack.said())
        answer = answer_of(stack, asked)
        assert says in answer.lower(), (what, answer)
        error = _result_of(stack, str(asked.run_id)).get("error") or {}
        assert_readable(error.get("message"), f"{what}: the snippet's error")
        next_s = _answers_next(stack, ledger, user, session_id, n)
        assert stack.worker_pids(worker) == pids, f"{what}: the worker's processes changed"
        timings.append(f"{what}: {took:.1f} s ({error.get('type')}: {error.get('message')!r}), "
                       f"next answer {next_s:.1f} s")  # fmt: skip
    ledger.audit(stack.engine, attempts=1)
    print("\n[sandbox limits] " + "; ".join(timings))


def _envelope(body: str, **changes: Any) -> bytes:
    """A kombu message as Redis holds it (json), with `body` as given."""
    message = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": "analysis"},
            "delivery_mode": 2,
            "delivery_tag": str(uuid.uuid4()),
            "priority": 0,
        },
    }
    message.update(changes)
    return json.dumps(message).encode()


def _task(name: str, args: list[Any]) -> bytes:
    body = base64.b64encode(json.dumps([args, {}, {}]).encode()).decode()
    return _envelope(body, headers={"task": name, "id": str(uuid.uuid4()), "lang": "py"})


MALFORMED = {
    "empty": b"",
    "broken JSON": b"{bad",
    "a JSON list": b"[]",
    "JSON null": b"null",
    "undecodable base64 body": _envelope("!!! not base64 !!!"),
    "base64 of no JSON": _envelope(base64.b64encode(b"\xff\xfe not json").decode()),
    "an unknown task": _task("worker.tasks.no_such_task", []),
    "a run that does not exist": _task("worker.tasks.run_turn", [str(uuid.uuid4())]),
    "a run id that is no id": _task("worker.tasks.run_turn", ["not-a-uuid"]),
}


def test_malformed_messages_in_redis_do_not_stop_the_worker(fault_stack: Any) -> None:
    """Entries that are no kombu message, or no task of ours, pushed onto the analysis
    queue ahead of a real question: the worker skips them, keeps its processes, and answers.
    The LLM is the FAKE `tool_script` model."""
    stack = fault_stack()
    client = stack.start_api()
    worker = stack.start_worker(beat=True)
    user = client.user()
    session_id = str(client.session(user, [])["id"])
    ledger = Ledger()
    _answers_next(stack, ledger, user, session_id, 1)
    pids = stack.worker_pids(worker)

    queue = f"{stack.prefix}celery:analysis"
    broker = redis.Redis.from_url(stack.redis_url)
    try:
        for raw in MALFORMED.values():
            broker.lpush(queue, raw)
        # ... and a real question behind them, in the same queue
        took = _answers_next(stack, ledger, user, session_id, 2)
        assert broker.llen(queue) == 0
    finally:
        broker.close()
    assert worker.poll() is None, stack.said()
    assert stack.worker_pids(worker) == pids, "the worker's processes changed"
    took_again = _answers_next(stack, ledger, user, session_id, 3)
    ledger.audit(stack.engine, attempts=1)
    skipped = stack.log_text().count("skipped a malformed broker message")
    assert skipped >= 5, stack.said()  # the five that are no kombu message at all
    print(
        f"\n[malformed messages] {len(MALFORMED)} pushed ({', '.join(MALFORMED)}); the question "
        f"behind them answered in {took:.1f} s, the next in {took_again:.1f} s; the worker "
        f"logged {skipped} as skipped"
    )
