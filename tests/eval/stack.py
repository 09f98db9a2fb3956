"""`make eval` through the real stack: a fresh PostgreSQL database (migrated), Redis (a key
prefix of its own), one Celery worker with the process sandbox and the API under uvicorn;
the datasets uploaded through `POST /api/datasets`, each question asked in a session of its
own (a follow-up after the question it follows) and its answer read from the run's events.

The chat model is the worker's: the offline model, or the OpenAI-compatible endpoint named
by OPENAI_API_KEY / OPENAI_BASE_URL / LLM_MODEL when they are set here.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.bench.bench_turn import ADMIN_URL, REDIS_URL, _free_port
from tests.bench.stack import Procs, create_database, delete_redis_prefix, drop_database, wait_http
from tests.eval import datasets
from tests.eval.questions import Case
from tests.eval.report import Outcome, judge

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "eval-password-1234"
ANSWER_TIMEOUT_S = 180


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in response.iter_lines():
        if line:
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            continue
        if data:
            yield json.loads("\n".join(data))
            data = []


class Client:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=httpx.Timeout(ANSWER_TIMEOUT_S, connect=10))
        email = f"eval-{secrets.token_hex(4)}@example.com"
        self.http.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD}
        ).raise_for_status()
        login = self.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        self.datasets: dict[str, str] = {}

    def dataset(self, name: str) -> str:
        if name in self.datasets:
            return self.datasets[name]
        filename, content = datasets.upload(name)
        response = self.http.post("/api/datasets", files={"file": (filename, content)})
        response.raise_for_status()
        dataset_id = str(response.json()["data"][0]["id"])
        deadline = time.monotonic() + 180
        while True:
            body = self.http.get(f"/api/datasets/{dataset_id}").json()
            if body["status"] == "ready":
                break
            if body["status"] != "processing" or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready: {body}")
            time.sleep(0.2)
        self.datasets[name] = dataset_id
        return dataset_id

    def session(self, name: str) -> str:
        response = self.http.post(
            "/api/sessions",
            json={
                "title": f"eval {name}",
                "dataset_ids": [self.dataset(n) for n in name.split("+")],  # "a+b": both
            },
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def ask(self, session: str, question: str) -> tuple[str, str | None]:
        """The answer's text and the last code run."""
        for _ in range(60):
            response = self.http.post(
                f"/api/sessions/{session}/messages", json={"content": question}
            )
            if response.status_code != 429:
                break
            time.sleep(float(response.headers.get("Retry-After", "1")))
        response.raise_for_status()
        run_id = response.json()["run_id"]
        answer, code = "", None
        with self.http.stream("GET", f"/api/runs/{run_id}/events") as stream:
            stream.raise_for_status()
            for event in _events(stream):
                payload = event.get("payload") or {}
                if event["type"] == "code":
                    code = payload.get("code")
                elif event["type"] == "answer":
                    answer = str(payload.get("content", ""))
                elif event["type"] == "done":
                    break
        return answer, code


def _env(work: Path, database_url: str, prefix: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUARRY_", "SANDBOX_", "DB_", "REDIS_"))
        and k not in ("DATABASE_URL", "DATA_DIR", "JWT_SECRET_KEY", "PYTHONPATH", "LLM_FACTORY")
    }
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(work / "data"),
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        REDIS_URL=REDIS_URL,
        REDIS_PREFIX=prefix,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        SANDBOX_BACKEND="process",
        SANDBOX_UID_BASE="68000",
        WORKER_METRICS_PORT="0",
        REGISTER_MAX_PER_IP_PER_HOUR="1000000",
        # one user asks every question: a limit meant for people typing would pace it
        TURNS_PER_MINUTE_PER_USER="100000",
    )
    return env


def model_of(env: dict[str, str]) -> str:
    if env.get("OPENAI_API_KEY"):
        return (
            f"{env.get('LLM_MODEL', 'the default model')} at {env.get('OPENAI_BASE_URL', 'OpenAI')}"
        )
    return "offline"


def run_through_api(cases: list[Case]) -> tuple[list[Outcome], str]:
    work = Path(tempfile.mkdtemp(prefix="quarry-eval-"))
    procs = Procs(work / "logs")
    (work / "logs").mkdir(parents=True)
    (work / "data").mkdir()
    prefix = f"quarry-eval-{uuid.uuid4().hex[:8]}:"
    database_url = create_database(ADMIN_URL, "quarry_eval")
    env = _env(work, database_url, prefix)
    outcomes: list[Outcome] = []
    try:
        migrate = subprocess.run(
            [sys.executable, "-m", "api.prestart"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed: {migrate.stderr.decode()[-2000:]}")
        procs.spawn(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-Q",
                "analysis,datasets,maintenance",
                "--concurrency",
                "2",
                "--without-gossip",
                "-l",
                "INFO",
                "-n",
                f"eval-{uuid.uuid4().hex[:6]}@%h",
            ],
            env,
            cwd=ROOT,
        )
        port = _free_port()
        api = procs.spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", api, 90, work / "logs" / "api.log")
        client = Client(base)
        for case in cases:
            try:
                session = client.session(case.dataset)
                if case.after:
                    client.ask(session, case.after)
                text, code = client.ask(session, case.question)
                outcomes.append(judge(case, text, code))
            except Exception as exc:  # a question that breaks the run is a finding
                outcomes.append(judge(case, "", None, f"{type(exc).__name__}: {exc}"))
        return outcomes, model_of(env)
    finally:
        procs.close()
        drop_database(ADMIN_URL, database_url)
        delete_redis_prefix(REDIS_URL, prefix)
        print(f"(logs kept in {work / 'logs'})")
