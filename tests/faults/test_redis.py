"""Redis faults, on a private redis-server (never the machine's shared one): restarted and
flushed while turns wait in it, and stopped for seconds while a worker runs and users ask.

Real: PostgreSQL, the Celery worker processes with beat, the process sandbox, the API (in
process, TestClient). FAKE: the LLM, `tests.agent_models:tool_script`, which runs a
`python:CODE` question as one sandbox tool call and answers with the tool's output.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.faults.conftest import (
    FINISHED,
    Ledger,
    RedisServer,
    answer_of,
    api_back_within,
    probe_as,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_turns_queued_in_a_redis_that_restarts_flushed_each_run_once(
    private_redis: RedisServer, fault_stack: Any
) -> None:
    """Six turns of three users wait in Redis with no worker; Redis is flushed and restarted
    (every message gone); a worker with beat starts. The reaper finds each queued run whose
    queue is empty and sends it again: every run succeeds, claimed once, one answer each.
    The LLM is the FAKE `tool_script` model."""
    stack = fault_stack(redis_url=private_redis.url)
    client = stack.start_api()
    ledger = Ledger()
    users = [client.user() for _ in range(3)]
    expected: dict[str, int] = {}
    for i, user in enumerate(users):
        for j in range(2):
            session_id = str(client.session(user, [])["id"])
            a, b = 1000 + i, 7 + j
            asked = ledger.ask(stack, user, session_id, f"python:{a} * {b}")
            assert asked.status_code == 202, asked.body
            expected[str(asked.run_id)] = a * b
    broker = private_redis.client()
    assert broker.llen(f"{stack.prefix}celery:analysis") == 6
    broker.close()

    private_redis.flushall()
    private_redis.stop()
    private_redis.start()
    broker = private_redis.client()
    assert broker.dbsize() == 0
    broker.close()
    api_s = api_back_within(probe_as(stack.client, users[0]))

    worker = stack.start_worker(beat=True)
    worker_started = time.monotonic()

    def consuming() -> bool:  # the worker's main process said it is alive
        with stack.engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT 1 FROM worker_heartbeats WHERE pid = :p"), {"p": worker.pid}
                ).first()
            )

    ready_s = wait_until(consuming, "the worker is up", 60)
    for asked in ledger.runs:
        run = stack.wait_run(asked.user, str(asked.run_id), timeout=60)
        assert run["status"] == "succeeded", (run, stack.said())
    done = time.monotonic() - worker_started
    runs = ledger.audit(stack.engine, attempts=1)
    for asked in ledger.runs:
        run_id = str(asked.run_id)
        assert runs[run_id]["requeues"] >= 1, runs[run_id]  # the reaper sent it again
        assert f"result: {expected[run_id]}" in answer_of(stack, asked)
    print(
        f"\n[redis flushed] API 2xx {api_s:.2f} s after Redis was back; the worker was up "
        f"{ready_s:.1f} s after it started, all {len(runs)} runs done {done:.1f} s after it "
        f"started; {ledger.summary(stack.engine)}"
    )


def test_redis_down_for_seconds_while_a_worker_runs_and_users_ask(
    private_redis: RedisServer, fault_stack: Any
) -> None:
    """Three users keep asking (each waits for its answer, then asks again) while a worker
    with beat runs; Redis stops for ~6 s (losing everything it held) and comes back. Every
    run ends, within seconds of Redis coming back (a lost message used to cost 10 minutes),
    claimed once and answered at most once; the turns asked once it is back succeed. The LLM
    is the FAKE `tool_script` model."""
    stack = fault_stack(redis_url=private_redis.url)
    client = stack.start_api()
    stack.start_worker(beat=True)
    users = [client.user() for _ in range(3)]
    sessions = [str(client.session(user, [])["id"]) for user in users]
    ledger = Ledger()
    warm = ledger.ask(stack, users[0], sessions[0], "python:1 + 1")
    assert stack.wait_run(users[0], str(warm.run_id), timeout=60)["status"] == "succeeded"

    stop = threading.Event()
    problems: list[str] = []

    def keep_asking(index: int) -> None:
        user, session_id = users[index], sessions[index]
        n = 0
        while not stop.is_set():
            n += 1
            asked = ledger.ask(stack, user, session_id, f"python:{index + 1} * {n} + 100000")
            if asked.run_id is None:
                time.sleep(0.3)  # refused while the session was busy, or the API failed
                continue
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    response = client.get(f"/api/runs/{asked.run_id}", headers=user.headers)
                    if response.status_code == 200 and response.json()["status"] in FINISHED:
                        break
                except Exception as exc:
                    problems.append(f"GET run: {type(exc).__name__}: {exc}")
                time.sleep(0.2)

    threads = [threading.Thread(target=keep_asking, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    private_redis.stop()
    down_at = time.monotonic()
    time.sleep(6)
    private_redis.start()
    back_at, back_wall = time.monotonic(), datetime.now(UTC)
    api_s = api_back_within(probe_as(stack.client, users[0]))
    # turns asked once Redis is back, in fresh sessions (the clients' own may still wait)
    after = []
    for i, user in enumerate(users):
        session_id = str(client.session(user, [])["id"])
        asked = ledger.ask(stack, user, session_id, f"python:{i + 1} * 200000")
        assert asked.status_code == 202, asked.body
        after.append(asked)
    for asked in after:
        assert stack.wait_run(asked.user, str(asked.run_id), timeout=60)["status"] == "succeeded"
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
        assert not thread.is_alive(), f"a client thread is stuck; {stack.said()}"
    assert not problems, problems[:5]

    runs = ledger.audit(stack.engine, attempts=1)  # no worker died
    statuses = [r["status"] for r in runs.values()]
    assert len(runs) >= 6, ledger.asked
    assert statuses.count("succeeded") >= len(statuses) * 0.6, runs
    for asked in after:
        assert asked.run["status"] == "succeeded", asked.run
    late = []
    for run in runs.values():
        finished = run["finished_at"]
        if finished > back_wall:
            late.append(round((finished - back_wall).total_seconds(), 1))
    assert max(late, default=0) < 30, f"runs ended {late} s after Redis came back"
    refused = [(a.status_code, a.body[:120]) for a in ledger.asked if a.run_id is None]
    posts_down = [round(a.seconds, 2) for a in ledger.asked if down_at <= a.asked_at <= back_at]
    print(
        f"\n[redis down 6 s] {len(runs)} runs: {statuses.count('succeeded')} succeeded, "
        f"{statuses.count('failed')} failed; API 2xx {api_s:.2f} s after Redis was back; runs "
        f"still open then ended after (s): {sorted(late)}; each run waited (s): "
        f"{sorted(round(r['waited_s'], 1) for r in runs.values())}; attempts: "
        f"{sorted(r['attempts'] for r in runs.values())}; POST seconds while down: "
        f"{posts_down}; refused: {refused[:5]}"
    )
    for run in runs.values():
        if run["status"] != "succeeded":
            print(f"  failed run: {run['error']!r}")
