"""The agent end to end: real PostgreSQL, real Redis, real Celery worker processes
(`celery -A worker.celery_app worker`), the real process sandbox. The LLM is either Quarry's
offline model or a FAKE scripted model from tests/agent_models.py (no provider is
reachable here), loaded by the worker through LLM_FACTORY.

The critical test: "My name is Alice", then the API and the worker are stopped and started
again, then "What is my name?" is answered with "Alice" because the history came back
from PostgreSQL (the scripted model says "Alice" only if it receives it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from api.config import Settings
from api.main import create_app
from tests.conftest import TEST_SECRET, make_settings
from tests.factories import Client, User

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


class Stack:
    """The API (in-process, as TestClient) and Celery workers (real processes), sharing
    one database, one Redis key prefix and one data directory."""

    def __init__(self, pg_url: str, redis_url: str, data_dir: Path, **overrides: Any) -> None:
        self.prefix = f"quarry-test-{uuid.uuid4().hex[:8]}:"
        self.values: dict[str, Any] = {
            "redis_url": redis_url,
            "redis_prefix": self.prefix,
            "sandbox_timeout_s": 20,
            "run_heartbeat_s": 0.5,
            "worker_heartbeat_s": 1,  # a killed worker is known dead after 3 s
            "sandbox_uid_base": 63000,  # apart from the sandbox tests' own uids
            **overrides,
        }
        self.pg_url, self.redis_url, self.data_dir = pg_url, redis_url, data_dir
        self.settings: Settings = make_settings(data_dir, pg_url, **self.values)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.test_client: TestClient | None = None
        self.client: Client
        self._settle_leftovers()

    def _settle_leftovers(self) -> None:
        """The test database is shared by the whole run, and its reapers are fast: a run or
        an upload an earlier test left unfinished (no worker ran it, on purpose) would be
        sent again to this stack's workers and keep them busy. Tests run one at a time, so
        whatever is unfinished now is an earlier test's: settle it before starting."""
        engine = create_engine(self.pg_url, poolclass=NullPool)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE runs SET status = 'cancelled', finished_at = now(), "
                    "error = 'left over by an earlier test' "
                    "WHERE status IN ('queued', 'running')"
                )
            )
            conn.execute(
                text(
                    "UPDATE datasets SET status = 'failed', "
                    "error = 'left over by an earlier test' WHERE status = 'processing'"
                )
            )
        engine.dispose()

    # --- the API -----------------------------------------------------------------------
    def start_api(self) -> Client:
        self.test_client = TestClient(create_app(self.settings))
        self.test_client.__enter__()
        self.client = Client(self.test_client)
        return self.client

    def stop_api(self) -> None:
        if self.test_client is not None:
            self.test_client.__exit__(None, None, None)
            self.test_client = None

    # --- workers -----------------------------------------------------------------------
    def env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QUARRY_", "LLM_"))}
        env.update(
            DATABASE_URL=self.pg_url,
            DATA_DIR=str(self.data_dir),
            JWT_SECRET_KEY=TEST_SECRET,
            LOG_LEVEL="WARNING",
            LOG_JSON="true",
            PYTHONPATH=str(ROOT),
        )
        env.pop("OPENAI_API_KEY", None)
        for key, value in {**self.values, **extra}.items():
            env[key.upper()] = str(value)
        return env

    def start_worker(self, beat: bool = False, **extra: Any) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", "analysis,datasets,maintenance", "--concurrency", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
            "-n", f"test-{uuid.uuid4().hex[:6]}@%h",
        ]  # fmt: skip
        if beat:
            command.append("--beat")
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def kill_workers(self, sig: int = signal.SIGKILL) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.workers.clear()

    def stop_workers(self) -> None:
        self.kill_workers(signal.SIGTERM)

    def close(self) -> None:
        self.stop_api()
        self.kill_workers()
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(f"{self.prefix}*"):
            client.delete(key)
        client.close()

    # --- helpers -----------------------------------------------------------------------
    def ask(self, user: User, session_id: str, question: str) -> str:
        response = self.client.post(
            f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": question}
        )
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def wait_run(self, user: User, run_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.client.get(f"/api/runs/{run_id}", headers=user.headers).json()
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return dict(run)
            if time.monotonic() > deadline:
                errors = b"".join(p.stderr.read1() if p.stderr else b"" for p in self.workers)
                raise AssertionError(
                    f"run {run_id} is {run['status']}; worker said {errors[-3000:]!r}"
                )
            time.sleep(0.1)

    def events(self, user: User, run_id: str, **headers: str) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/api/runs/{run_id}/events", headers={**user.headers, **headers}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        found = []
        for block in response.text.split("\n\n"):
            fields = dict(
                line.split(": ", 1)
                for line in block.splitlines()
                if ": " in line and not line.startswith(":")
            )
            if "data" in fields:
                event = json.loads(fields["data"])
                assert int(fields["id"]) == event["seq"]
                assert fields["event"] == event["type"]
                found.append(event)
        return found

    def answer(self, user: User, session_id: str) -> str:
        messages = self.client.get(
            f"/api/sessions/{session_id}/messages", headers=user.headers
        ).json()["data"]
        return str(messages[-1]["content"]) if messages[-1]["role"] == "assistant" else ""


@pytest.fixture
def stack_factory(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        stack = Stack(pg_url, redis_url, tmp_path / "data", **overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


def _session_with_census(client: Client) -> tuple[User, str]:
    user = client.user()
    dataset = client.ready_dataset(user)
    return user, str(client.session(user, [dataset["id"]])["id"])


def _session_then_no_worker(stack: Stack) -> tuple[User, str]:
    """A worker converts the upload, then stops: what is asked next stays queued."""
    stack.start_worker()
    found = _session_with_census(stack.client)
    stack.stop_workers()
    return found


def test_offline_model_answers_with_code_a_chart_and_ordered_events(stack_factory: Any) -> None:
    stack = stack_factory()
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)

    run_id = stack.ask(user, session_id, "What is the average income by education?")
    run = stack.wait_run(user, run_id)
    assert run["status"] == "succeeded", run["error"]
    assert run["model"] == "offline"

    events = stack.events(user, run_id)
    kinds = [e["type"] for e in events if e["type"] != "llm_input"]
    assert kinds == ["status", "plan", "code", "result", "chart", "answer", "done"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    result = next(e["payload"] for e in events if e["type"] == "result")
    assert result["ok"] is True
    table = result["tables"][0]
    assert dict(zip([r[0] for r in table["rows"]], [r[1] for r in table["rows"]], strict=True)) == {
        "PhD": 95000.0, "MS": 70000.0, "BS": 50000.0, "HS": 30000.0,
    }  # fmt: skip
    answer = next(e["payload"] for e in events if e["type"] == "answer")
    assert "95000" in answer["content"]
    assert "PhD" in answer["content"]

    # the chart is kept, the answer is a message, and resuming skips what was seen
    charts = client.get(f"/api/sessions/{session_id}/visualizations", headers=user.headers).json()
    assert charts["count"] == 1
    chart = next(e["payload"] for e in events if e["type"] == "chart")
    assert charts["data"][0]["id"] == chart["visualization_id"]
    assert charts["data"][0]["figure"]["data"][0]["type"] == "bar"
    assert stack.answer(user, session_id) == answer["content"]
    later = stack.events(user, run_id, **{"Last-Event-ID": str(events[-3]["seq"])})
    assert [e["type"] for e in later] == ["answer", "done"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") or line.startswith(f"{name} "):
            head, _, value = line.rpartition(" ")
            found = head[len(name) :].strip("{}").split(",")
            if ",".join(sorted(found)) == wanted or (not labels and head == name):
                return float(value)
    return 0.0


def test_a_direct_execution_runs_on_a_worker_that_counts_it(stack_factory: Any) -> None:
    stack = stack_factory()
    client = stack.start_api()
    port = _free_port()
    stack.start_worker(worker_metrics_port=port)
    user, session_id = _session_with_census(client)

    response = client.post(
        f"/api/sessions/{session_id}/executions",
        headers=user.headers,
        json={"code": "import plotly.express as px\nfig = px.histogram(df, x='age')\ndf.age.max()"},
    )
    assert response.status_code == 202, response.text
    run = stack.wait_run(user, response.json()["run_id"])
    assert run["status"] == "succeeded", run
    assert run["kind"] == "execution"
    events = stack.events(user, run["id"])
    assert [e["type"] for e in events] == ["status", "code", "result", "chart", "done"]
    assert events[2]["payload"]["result"] == "60"  # the oldest in the census frame
    turn = stack.wait_run(user, stack.ask(user, session_id, "What is the mean age?"))
    assert turn["status"] == "succeeded"

    # the worker's own endpoint adds up what its prefork child did
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    assert _metric(text, "quarry_worker_runs_total", kind="execution", outcome="succeeded") == 1
    assert _metric(text, "quarry_worker_runs_total", kind="turn", outcome="succeeded") == 1
    assert _metric(text, "quarry_worker_run_duration_seconds_count", kind="turn") == 1
    ran = _metric(text, "quarry_worker_sandbox_executions_total", backend="process", outcome="ok")
    assert ran == 2
    assert _metric(text, "quarry_worker_llm_request_duration_seconds_count", model="offline") >= 1


def test_history_survives_a_restart_of_api_and_worker(stack_factory: Any) -> None:
    """The exam's critical test, with the scripted FAKE model `memory`."""
    stack = stack_factory(llm_factory="tests.agent_models:memory")
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)

    assert (
        stack.wait_run(user, stack.ask(user, session_id, "My name is Alice"))["status"]
        == "succeeded"
    )
    run = stack.wait_run(user, stack.ask(user, session_id, "What is the mean age?"))
    assert run["status"] == "succeeded"
    assert stack.answer(user, session_id) == "The mean age is 42.5."
    assert run["prompt_tokens"] == 200
    assert run["completion_tokens"] == 20

    stack.stop_workers()
    stack.stop_api()
    client = stack.start_api()
    stack.start_worker()

    assert (
        stack.wait_run(user, stack.ask(user, session_id, "What is my name?"))["status"]
        == "succeeded"
    )
    assert "Alice" in stack.answer(user, session_id)
    assert (
        stack.wait_run(user, stack.ask(user, session_id, "What was the mean age?"))["status"]
        == "succeeded"
    )
    assert "42.5" in stack.answer(user, session_id)

    # a fresh session of the same user knows nothing: the history is per session
    other = str(client.session(user, [])["id"])
    assert stack.wait_run(user, stack.ask(user, other, "What is my name?"))["status"] == "succeeded"
    assert stack.answer(user, other) == "I don't know."

    # deleting the session deletes the conversation the agent kept for it
    engine = create_engine(stack.pg_url, poolclass=NullPool)
    count = "SELECT count(*) FROM {} WHERE thread_id = :t"
    tables = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
    with engine.connect() as conn:
        assert conn.execute(text(count.format("checkpoints")), {"t": session_id}).scalar()
    assert client.delete(f"/api/sessions/{session_id}", headers=user.headers).status_code == 204
    with engine.connect() as conn:
        for table in tables:
            assert conn.execute(text(count.format(table)), {"t": session_id}).scalar() == 0, table
        assert conn.execute(text(count.format("checkpoints")), {"t": other}).scalar()
    engine.dispose()


def test_history_is_rebuilt_from_messages_when_the_checkpoint_is_gone(stack_factory: Any) -> None:
    stack = stack_factory(llm_factory="tests.agent_models:memory")
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)
    assert (
        stack.wait_run(user, stack.ask(user, session_id, "My name is Alice"))["status"]
        == "succeeded"
    )

    engine = create_engine(stack.pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        for table in ("checkpoint_writes", "checkpoint_blobs", "checkpoints"):
            deleted = conn.execute(
                text(f"DELETE FROM {table} WHERE thread_id = :t"),  # noqa: S608
                {"t": session_id},
            )
            assert table != "checkpoints" or deleted.rowcount > 0
    engine.dispose()

    assert (
        stack.wait_run(user, stack.ask(user, session_id, "What is my name?"))["status"]
        == "succeeded"
    )
    assert "Alice" in stack.answer(user, session_id)


def test_the_agent_describes_a_dataset_from_its_profile(stack_factory: Any) -> None:
    stack = stack_factory(llm_factory="tests.agent_models:tool_script")
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)

    run = stack.wait_run(user, stack.ask(user, session_id, "describe:census"))
    assert run["status"] == "succeeded", run["error"]
    described = json.loads(stack.answer(user, session_id).removeprefix("TOOL SAID: "))
    assert [c["name"] for c in described["columns"]] == ["age", "income", "education", "workclass"]
    assert described["rows"] == 8
    assert len(described["sample_rows"]) == 5

    # the owner withholds sample rows: only the schema and statistics reach the model
    dataset_id = client.get(f"/api/sessions/{session_id}", headers=user.headers).json()["datasets"][
        0
    ]["id"]
    response = client.patch(
        f"/api/datasets/{dataset_id}", headers=user.headers, json={"share_samples": False}
    )
    assert response.status_code == 200, response.text
    run_id = stack.ask(user, session_id, "describe:df")
    assert stack.wait_run(user, run_id)["status"] == "succeeded"
    described = json.loads(stack.answer(user, session_id).removeprefix("TOOL SAID: "))
    assert "sample_rows" not in described
    assert all("top_values" not in c for c in described["columns"])
    audit = next(e["payload"] for e in stack.events(user, run_id) if e["type"] == "llm_input")
    assert audit["datasets"] == [{"name": "census", "sample_rows_shared": False}]


def test_the_sandbox_blocks_what_the_agent_writes(stack_factory: Any) -> None:
    stack = stack_factory(llm_factory="tests.agent_models:tool_script")
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)

    run_id = stack.ask(user, session_id, "python:open('/etc/passwd').read()")
    assert (
        stack.wait_run(user, run_id)["status"] == "succeeded"
    )  # the turn ran; the snippet did not
    answer = stack.answer(user, session_id)
    assert "root:" not in answer
    assert "open" in answer
    assert "Error" in answer
    result = next(e["payload"] for e in stack.events(user, run_id) if e["type"] == "result")
    assert result["ok"] is False

    # an unknown column never reaches the sandbox: the model gets suggestions instead
    run_id = stack.ask(user, session_id, "python:df['Incme'].mean()")
    assert stack.wait_run(user, run_id)["status"] == "succeeded"
    assert "Did you mean 'income'?" in stack.answer(user, session_id)


def test_the_workspace_carries_variables_to_the_next_snippet(stack_factory: Any) -> None:
    stack = stack_factory(llm_factory="tests.agent_models:tool_script")
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)

    first = stack.ask(user, session_id, "python:young = df[df['age'] < 40]\nlen(young)")
    assert stack.wait_run(user, first)["status"] == "succeeded"
    second = stack.ask(user, session_id, "python:len(young)")
    assert stack.wait_run(user, second)["status"] == "succeeded"
    assert "result: 3" in stack.answer(user, session_id)


def test_a_cancelled_run_stops_its_sandbox(stack_factory: Any) -> None:
    stack = stack_factory(llm_factory="tests.agent_models:tool_script", sandbox_timeout_s=120)
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)

    run_id = stack.ask(user, session_id, "python:while True:\n    pass")
    deadline = time.monotonic() + 60
    while client.get(f"/api/runs/{run_id}", headers=user.headers).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    started = time.monotonic()
    response = client.post(f"/api/runs/{run_id}/cancel", headers=user.headers)
    assert response.status_code == 202, response.text
    run = stack.wait_run(user, run_id, timeout=30)
    assert run["status"] == "cancelled"
    assert time.monotonic() - started < 10
    kinds = [e["type"] for e in stack.events(user, run_id)]
    assert kinds[-1] == "done"
    again = client.post(f"/api/runs/{run_id}/cancel", headers=user.headers)
    assert again.status_code == 409


def test_a_run_waiting_for_a_worker_is_cancelled_at_once_and_limits_apply(
    stack_factory: Any,
) -> None:
    stack = stack_factory(max_active_runs_per_user=2)
    client = stack.start_api()
    user, session_id = _session_then_no_worker(stack)
    run_id = stack.ask(user, session_id, "describe the data")

    busy = client.post(
        f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": "again"}
    )
    assert busy.status_code == 429
    assert int(busy.headers["Retry-After"]) >= 1
    assert "still busy" in busy.json()["error"]["message"]
    second_session = str(client.session(user, [])["id"])
    stack.ask(user, second_session, "hello")
    third_session = str(client.session(user, [])["id"])
    over = client.post(
        f"/api/sessions/{third_session}/messages", headers=user.headers, json={"content": "x"}
    )
    assert over.status_code == 429
    assert "limit is 2" in over.json()["error"]["message"]

    assert client.post(f"/api/runs/{run_id}/cancel", headers=user.headers).status_code == 202
    assert client.get(f"/api/runs/{run_id}", headers=user.headers).json()["status"] == "cancelled"
    assert [e["type"] for e in stack.events(user, run_id)] == ["error", "done"]


def test_a_worker_killed_mid_turn_leaves_no_run_stuck(stack_factory: Any) -> None:
    stack = stack_factory(
        llm_factory="tests.agent_models:tool_script",
        sandbox_timeout_s=4,
        run_stale_after_s=3,
        reaper_interval_s=1,
    )
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)
    run_id = stack.ask(user, session_id, "python:while True:\n    pass")
    deadline = time.monotonic() + 60
    while "code" not in [e["type"] for e in _events_so_far(stack, run_id)]:
        assert time.monotonic() < deadline, "the turn never started"
        time.sleep(0.1)
    stack.kill_workers(signal.SIGKILL)

    stack.start_worker(beat=True)  # a new worker, with the reaper
    run = stack.wait_run(user, run_id, timeout=90)
    # re-run once: the snippet times out again, and the turn ends with that answer
    assert run["status"] == "succeeded", run["error"]
    assert run["attempts"] == 2
    assert "longer than 4 s" in stack.answer(user, session_id)


def test_a_turn_run_again_after_its_worker_died_keeps_only_that_attempts_code_and_charts(
    stack_factory: Any,
) -> None:
    """The lost attempt had already stored a code run and a chart when its worker died;
    the answer that finally comes must show only what the attempt that made it ran (before:
    both attempts' executions and charts)."""
    stack = stack_factory(
        llm_factory="tests.agent_models:steps",
        sandbox_timeout_s=4,
        run_stale_after_s=3,
        reaper_interval_s=1,
    )
    client = stack.start_api()
    stack.start_worker()
    user, session_id = _session_with_census(client)
    chart = "import plotly.express as px\npx.bar(df, x='education', y='income')"
    run_id = stack.ask(user, session_id, "steps:" + json.dumps([chart, "while True:\n    pass"]))
    deadline = time.monotonic() + 60
    while [e["type"] for e in _events_so_far(stack, run_id)].count("code") < 2:
        assert time.monotonic() < deadline, "the second step never started"
        time.sleep(0.1)
    stack.kill_workers(signal.SIGKILL)

    stack.start_worker(beat=True)
    run = stack.wait_run(user, run_id, timeout=90)
    assert run["status"] == "succeeded", run["error"]
    assert run["attempts"] == 2
    executions = client.get(f"/api/sessions/{session_id}/executions", headers=user.headers).json()[
        "data"
    ]
    assert len([e for e in executions if e["run_id"] == run_id]) == 2  # not 3
    charts = client.get(f"/api/sessions/{session_id}/visualizations", headers=user.headers).json()[
        "data"
    ]
    assert len(charts) == 1  # not 2
    events = stack.events(user, run_id)
    restarted = [e for e in events if e["type"] == "status" and e["payload"].get("restarted")]
    assert [e["payload"]["attempt"] for e in restarted] == [2]


def test_a_turn_whose_message_the_broker_lost_is_sent_again(stack_factory: Any) -> None:
    # (long enough for a worker starting on a busy machine to claim the re-sent message)
    stack = stack_factory(run_claim_timeout_s=4, reaper_interval_s=1)
    stack.start_api()
    user, session_id = _session_then_no_worker(stack)
    run_id = stack.ask(user, session_id, "What is the mean age?")
    broker = redis.Redis.from_url(stack.redis_url)  # the broker is flushed
    assert sum(1 for key in broker.scan_iter(f"{stack.prefix}*") if broker.delete(key)) >= 1
    broker.close()

    stack.start_worker(beat=True)
    run = stack.wait_run(user, run_id, timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert "42.5" in stack.answer(user, session_id)


def test_another_users_runs_and_events_answer_404(stack_factory: Any) -> None:
    stack = stack_factory()
    client = stack.start_api()
    owner, session_id = _session_then_no_worker(stack)
    run_id = stack.ask(owner, session_id, "describe the data")
    intruder = client.user()
    for method, path in [
        ("GET", f"/api/runs/{run_id}"),
        ("GET", f"/api/runs/{run_id}/events"),
        ("POST", f"/api/runs/{run_id}/cancel"),
        ("POST", f"/api/sessions/{session_id}/messages"),
        ("POST", f"/api/sessions/{session_id}/executions"),
        ("GET", f"/api/sessions/{session_id}/executions"),
        ("GET", f"/api/sessions/{session_id}/export.ipynb"),
    ]:
        response = client.request(
            method, path, headers=intruder.headers, json={"content": "x", "code": "df"}
        )
        assert response.status_code == 404, (method, path, response.text)
    assert client.get(f"/api/runs/{run_id}", headers=owner.headers).json()["status"] == "queued"


def _events_so_far(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    engine = create_engine(stack.pg_url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, type FROM run_events WHERE run_id = :r ORDER BY seq"), {"r": run_id}
        )
        found = [{"seq": seq, "type": kind} for seq, kind in rows]
    engine.dispose()
    return found


def test_a_question_asked_with_no_worker_running_says_so_then_runs_when_one_starts(
    stack_factory: Any,
) -> None:
    """Before: an empty answer and a Stop button, forever. Now the run says why it waits
    (GET and the event stream), and starts as soon as a worker does."""
    stack = stack_factory()
    client = stack.start_api()
    user, session_id = _session_then_no_worker(stack)  # stopped cleanly: known gone at once
    started = time.monotonic()
    run_id = stack.ask(user, session_id, "What is the mean age?")

    deadline = time.monotonic() + 30
    while not (run := client.get(f"/api/runs/{run_id}", headers=user.headers).json())["waiting"]:
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["status"] == "queued"
    assert "No analysis worker is running" in run["waiting"]
    with client.stream("GET", f"/api/runs/{run_id}/events", headers=user.headers) as stream:
        notice = None
        for line in stream.iter_lines():
            if line.startswith("data:") and '"notice"' in line:
                notice = json.loads(line[5:])
                break
    assert notice is not None
    assert notice["payload"]["message"] == run["waiting"]
    told_after = time.monotonic() - started
    print(f"told there is no worker after {told_after:.1f} s")  # ~3-8 s: refresh + grace

    stack.start_worker()
    done = stack.wait_run(user, run_id, timeout=60)
    assert done["status"] == "succeeded", done["error"]
    assert done["waiting"] is None
    assert "42.5" in stack.answer(user, session_id)
