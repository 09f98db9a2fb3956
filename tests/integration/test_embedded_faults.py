"""Embedded mode under faults, as `make demo` runs it: scripts/demo.py supervising the API
(uvicorn) and one Celery worker with beat, on SQLite and the file broker under DATA_DIR,
with the process sandbox. Nothing is faked but the LLM: a FAKE scripted model
(tests.agent_models:tool_script, loaded by the worker through LLM_FACTORY) runs each
`python:CODE` question as one sandbox call and answers with what the tool said.

Before: one empty file in the broker's queue folder stopped the worker for good
("Unrecoverable error: JSONDecodeError"), a dead worker stayed dead, and the next start
overwrote its log. Now a malformed message is set aside and logged, the supervisor starts
a dead worker again, its log is appended to, and the run it held is run again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import TEST_SECRET
from tests.factories import Client, User

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Demo:
    proc: subprocess.Popen[bytes]
    data: Path
    out: Path
    client: Client
    user: User
    session_id: str

    def worker_pid(self) -> int:
        return int((self.data / "run" / "worker.pid").read_text())

    def printed(self) -> str:
        return self.out.read_text(errors="replace")

    def ask(self, question: str) -> str:
        response = self.client.post(
            f"/api/sessions/{self.session_id}/messages",
            headers=self.user.headers,
            json={"content": question},
        )
        assert response.status_code == 202, response.text
        return str(response.json()["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/runs/{run_id}", headers=self.user.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_run(self, run_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (run := self.run(run_id))["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"{run}\n{self.printed()[-3000:]}"
            time.sleep(0.2)
        return run

    def events(self, run_id: str) -> list[str]:
        response = self.client.get(
            f"/api/runs/{run_id}/events", headers=self.user.headers, params={"follow": "false"}
        )
        return [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]

    def answer(self) -> str:
        messages = self.client.get(
            f"/api/sessions/{self.session_id}/messages", headers=self.user.headers
        ).json()["data"]
        return str(messages[-1]["content"])


def _wait_api(url: str, proc: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            found = httpx.get(f"{url}/readyz", timeout=2).json()
            if found.get("queues", {}).get("analysis", {}).get("workers"):
                return
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, f"the demo did not start\n{out.read_text()[-3000:]}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data = tmp_path_factory.mktemp("embedded-faults")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUARRY_", "LLM_"))}
    for key in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY"):
        env.pop(key, None)
    env.update(
        DATA_DIR=str(data), HOST="127.0.0.1", PORT=str(port), JWT_SECRET_KEY=TEST_SECRET,
        LLM_FACTORY="tests.agent_models:tool_script", SANDBOX_TIMEOUT_S="4",
        SANDBOX_UID_BASE="68000", RUN_HEARTBEAT_S="0.5", RUN_STALE_AFTER_S="3",
        REAPER_INTERVAL_S="1", WORKER_HEARTBEAT_S="1", RUN_CLAIM_TIMEOUT_S="3",
        LOG_LEVEL="WARNING", ARGON2_TIME_COST="1", ARGON2_MEMORY_COST_KIB="1024",
        ARGON2_PARALLELISM="1", PYTHONPATH=str(ROOT),
    )  # fmt: skip
    out = data / "supervisor.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "scripts/demo.py", "--no-ui", "--no-seed"],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=api, timeout=30)
    try:
        _wait_api(api, proc, out)
        client = Client(http)  # type: ignore[arg-type]
        user = client.user()
        dataset = client.ready_dataset(user)
        session = client.session(user, [dataset["id"]])
        yield Demo(proc, data, out, client, user, str(session["id"]))
    finally:
        http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the supervisor stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_malformed_broker_messages_do_not_stop_the_worker(demo: Demo) -> None:
    """The failure users met after ~12 minutes of `make demo`, forced: an empty message file
    (kombu's own writer exposes one between creating and writing it), a torn one, and a
    JSON value that is not a message, ahead of a real question in the queue."""
    pid = demo.worker_pid()
    queue = demo.data / "broker" / "queue"
    (queue / "00000000000000000001_x.analysis.msg").touch()
    (queue / "00000000000000000002_x.analysis.msg").write_bytes(b'{"body": "eyJ')
    (queue / "00000000000000000003_x.analysis.msg").write_bytes(b"[1, 2]")

    run = demo.wait_run(demo.ask("python:round(float(df['age'].mean()), 2)"), timeout=60)
    assert run["status"] == "succeeded", run["error"]
    assert "42.5" in demo.answer()
    assert demo.worker_pid() == pid  # the same worker, never stopped
    assert "worker stopped" not in demo.printed()
    corrupt = sorted(p.name for p in (demo.data / "broker" / "corrupt").iterdir())
    assert corrupt == [f"0000000000000000000{i}_x.analysis.msg" for i in (1, 2, 3)]
    log = (demo.data / "logs" / "worker.log").read_text()
    assert log.count("skipped a malformed broker message") == 3
    assert "Unrecoverable error" not in log


def test_a_killed_worker_is_started_again_and_its_turn_is_run_again(demo: Demo) -> None:
    pid = demo.worker_pid()
    run_id = demo.ask("python:while True:\n    pass")
    deadline = time.monotonic() + 60
    while "code" not in demo.events(run_id):  # the snippet is running in the sandbox
        assert time.monotonic() < deadline, "the turn never started"
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)

    run = demo.wait_run(run_id, timeout=120)
    # run again by the new worker: the snippet times out again, and that is the answer
    assert run["status"] == "succeeded", run["error"]
    assert run["attempts"] == 2
    assert "longer than 4 s" in demo.answer()
    assert demo.worker_pid() != pid
    printed = demo.printed()
    assert "worker stopped (killed by SIGKILL)" in printed
    assert "worker started again" in printed
    log = (demo.data / "logs" / "worker.log").read_text()
    assert log.count("starting worker") == 2  # appended to, not overwritten
    # and the new worker answers the next question as usual
    after = demo.wait_run(demo.ask("python:int(df['income'].max())"), timeout=60)
    assert after["status"] == "succeeded", after["error"]
    assert "105000" in demo.answer()
