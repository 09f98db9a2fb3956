"""PostgreSQL restarts (`pg_ctl restart -m fast`), on a private cluster (never the machine's
shared server): under steady load from several users, and while the worker is idle.

Before the fix, a worker's checkpointer held one psycopg connection for the life of the
process: after a restart every later turn of that worker failed until it was restarted.
These tests ask turns after the restart on the same worker processes and need them to
succeed. No worker dies here, so no run may be claimed twice: a turn whose result could not
be stored while the server restarted must end with a readable error, not be run again.

Real: PostgreSQL (private), Redis (shared, a key prefix of its own), Celery worker
processes, the process sandbox, the API (in process). FAKE: the LLM,
`tests.agent_models:tool_script`, which runs a `python:CODE` question as one sandbox tool
call and answers with the tool's output.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from tests.faults.conftest import (
    FINISHED,
    Ledger,
    PgCluster,
    answer_of,
    api_back_within,
    probe_as,
    wait_until,
)

pytestmark = pytest.mark.slow


def _ask_together(stack: Any, ledger: Ledger, users: list[Any], base: int) -> list[Any]:
    """One question per user, each in a new session, all queued at once (so that every
    worker takes one), then waited for."""
    asked = []
    for i, user in enumerate(users):
        session_id = str(stack.client.session(user, [])["id"])
        one = ledger.ask(stack, user, session_id, f"python:{base + i} * 3")
        assert one.status_code == 202, one.body
        asked.append(one)
    for one in asked:
        one.run = stack.wait_run(one.user, str(one.run_id), timeout=90)
    return asked


def test_postgres_restarted_under_steady_load(private_pg: PgCluster, fault_stack: Any) -> None:
    """Three users keep asking (two workers, both warm) while PostgreSQL restarts. Every
    run ends, once; the turns asked after the restart succeed on the same worker processes;
    the API answers 2xx within 5 s; nobody is left at the active-run limit. The LLM is the
    FAKE `tool_script` model."""
    stack = fault_stack(pg_url=private_pg.create_database())
    client = stack.start_api()
    workers = [stack.start_worker(beat=True), stack.start_worker()]
    users = [client.user() for _ in range(3)]
    ledger = Ledger()
    for one in _ask_together(stack, ledger, users, 100):  # both workers warm (checkpointer open)
        assert one.run["status"] == "succeeded", (one.run, stack.said())
    pids = [stack.worker_pids(w) for w in workers]

    stop = threading.Event()
    problems: list[str] = []

    def keep_asking(index: int) -> None:
        user = users[index]
        session_id = str(client.session(user, [])["id"])
        n = 0
        while not stop.is_set():
            n += 1
            asked = ledger.ask(stack, user, session_id, f"python:{index + 1} * {n} + 5000")
            if asked.run_id is None:
                time.sleep(0.3)
                continue
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    response = client.get(f"/api/runs/{asked.run_id}", headers=user.headers)
                    if response.status_code == 200 and response.json()["status"] in FINISHED:
                        break
                except Exception as exc:  # the in-process API raised: a defect
                    problems.append(f"GET run: {type(exc).__name__}: {exc}")
                time.sleep(0.2)

    threads = [threading.Thread(target=keep_asking, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    restart_started = time.monotonic()
    private_pg.restart()
    back = time.monotonic()
    api_s = api_back_within(probe_as(stack.client, users[0]))

    # asked after the restart, on the same worker processes: these must all succeed
    after = _ask_together(stack, ledger, users, 200) + _ask_together(stack, ledger, users, 300)
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
        assert not thread.is_alive(), f"a client thread is stuck; {stack.said()}"
    assert not problems, problems[:5]

    for one in after:
        assert one.run["status"] == "succeeded", (one.run, stack.said())
        assert f"result: {(int(one.question.split(':')[1].split()[0])) * 3}" in answer_of(
            stack, one
        )
    assert [stack.worker_pids(w) & p for w, p in zip(workers, pids, strict=True)] == pids, (
        "a worker process was replaced"
    )
    # no user is left blocked by runs that never end: a new question is accepted at once
    last = _ask_together(stack, ledger, users, 400)
    assert all(one.run["status"] == "succeeded" for one in last)

    print(
        f"\n[postgres restart under load] restart took {back - restart_started:.2f} s; API 2xx "
        f"{api_s:.2f} s after; {ledger.summary(stack.engine)}"
    )
    # no worker died: no run may have been run twice
    ledger.audit(stack.engine, attempts=1)


def test_postgres_restarted_while_the_worker_is_idle(
    private_pg: PgCluster, fault_stack: Any
) -> None:
    """A warm, idle worker; PostgreSQL restarts; the next turns succeed on the same worker
    (its checkpointer pool and engine reconnect). The LLM is the FAKE `tool_script` model."""
    stack = fault_stack(pg_url=private_pg.create_database())
    client = stack.start_api()
    worker = stack.start_worker(beat=True)
    user = client.user()
    ledger = Ledger()
    [warm] = _ask_together(stack, ledger, [user], 10)
    assert warm.run["status"] == "succeeded", warm.run
    pids = stack.worker_pids(worker)

    time.sleep(1)
    private_pg.restart()
    api_s = api_back_within(probe_as(stack.client, user))
    first_started = time.monotonic()
    [first] = _ask_together(stack, ledger, [user], 20)
    first_s = time.monotonic() - first_started
    [second] = _ask_together(stack, ledger, [user], 30)
    for one in (first, second):
        assert one.run["status"] == "succeeded", (one.run, stack.said())
    assert "result: 60" in answer_of(stack, first)
    assert stack.worker_pids(worker) == pids, "the worker was restarted"
    ledger.audit(stack.engine, attempts=1)
    print(
        f"\n[postgres restart, idle worker] API 2xx {api_s:.2f} s after the restart; the next "
        f"turn took {first_s:.2f} s"
    )


def test_postgres_down_while_a_turn_stores_its_result(
    private_pg: PgCluster, fault_stack: Any
) -> None:
    """The snippet (an endless loop, stopped by the 3 s sandbox timeout) ends while
    PostgreSQL is down for 4 s, so storing its result fails. The run still ends, with a
    readable error or an answer, once the server is back; the next turn succeeds. The LLM
    is the FAKE `tool_script` model."""
    stack = fault_stack(pg_url=private_pg.create_database(), sandbox_timeout_s=3)
    client = stack.start_api()
    worker = stack.start_worker(beat=True)
    user = client.user()
    ledger = Ledger()
    [warm] = _ask_together(stack, ledger, [user], 10)
    assert warm.run["status"] == "succeeded", warm.run
    pids = stack.worker_pids(worker)

    session_id = str(client.session(user, [])["id"])
    stuck = ledger.ask(stack, user, session_id, "python:while True:\n    pass")
    assert stuck.status_code == 202, stuck.body

    def coding() -> bool:
        with stack.engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT 1 FROM run_events WHERE run_id = :r AND type = 'code'"),
                    {"r": stuck.run_id},
                ).first()
            )

    wait_until(coding, "the snippet started", 60)
    private_pg.down_for(4)
    back = time.monotonic()
    api_s = api_back_within(probe_as(stack.client, user))
    run = stack.wait_run(user, str(stuck.run_id), timeout=60)
    ended_s = time.monotonic() - back
    [after] = _ask_together(stack, ledger, [user], 20)
    assert after.run["status"] == "succeeded", (after.run, stack.said())
    assert stack.worker_pids(worker) == pids, "the worker was restarted"
    print(
        f"\n[postgres down 4 s mid-turn] API 2xx {api_s:.2f} s after; the turn ended "
        f"{ended_s:.1f} s after ({run['status']}, attempts {run['attempts']}, error "
        f"{run['error']!r}); {ledger.summary(stack.engine)}"
    )
    ledger.audit(stack.engine, attempts=None)
