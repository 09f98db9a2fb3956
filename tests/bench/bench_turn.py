"""Agent turn benchmark: `make bench-turn`.

The platform's own overhead per chat turn, measured where a client sees it, on a real stack:
a fresh PostgreSQL database (migrated with Alembic), Redis as the broker (a key prefix of
its own), the API served by uvicorn in a subprocess (real HTTP, real Server-Sent Events),
and two Celery worker processes (`--concurrency 1` each: two replicas of the worker, as
scaling the worker out gives) with the process sandbox. The LLM is a FAKE, zero-latency
scripted model (`fake_model` below, loaded by the workers through LLM_FACTORY): every turn
is one `run_python` tool call (one real sandbox execution), then a short answer.

Per turn, t0 is when `POST /api/sessions/{id}/messages` answered 202; then the client opens
`GET /api/runs/{id}/events` and records the arrival of the first event and of `done`.

1. latency: N turns one after another (round robin over a few sessions, so each session
   stays short), after a warm-up: accepted -> first event, accepted -> done, the sandbox's
   own time (`duration_ms` of the `result` event) and the time spent in each server stage
   (from the events' timestamps);
2. flatness and checkpoint growth: one session of M turns; turn M against turn 1 (client
   latency to done, and the server's own time), and the bytes each turn adds to LangGraph's
   checkpoint tables for that thread against the turn's new content;
3. throughput: S sessions at once, each asking T questions in sequence: turns per second.

It prints numbers and marks the issue's targets met (✓) or not (✗); it asserts nothing.

    python -m tests.bench.bench_turn [--turns 100] [--sessions 4] [--flat-turns 50]
        [--load-sessions 8] [--load-turns 10] [--workers 2] [--pause 0.2] [--quick]
        [--logs DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
CODE = 'round(float(df["age"].mean()), 2)'
TOOL_NAME = "run_python"
USAGE: UsageMetadata = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}

# --- the fake LLM (loaded in the workers: LLM_FACTORY=tests.bench.bench_turn:fake_model) ---


class FakeTurnModel(GenericFakeChatModel):
    """A FAKE LLM with zero latency (no provider is called): for a user's question it asks
    for one `run_python` call with a small snippet against the session's dataset; once the
    tool's result is back, it answers in one short sentence quoting the result."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(messages=iter(()), **kwargs)

    def bind_tools(self, tools: Any, **kwargs: Any) -> FakeTurnModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            found = re.search(r"result: (\S+)", str(last.content))
            message = AIMessage(
                content=f"The mean age is {found.group(1) if found else 'unknown'}."
            )
        else:
            message = AIMessage(
                content="",
                tool_calls=[
                    {"name": TOOL_NAME, "args": {"code": CODE}, "id": f"call_{uuid.uuid4().hex}"}
                ],
            )
        message.usage_metadata = UsageMetadata(**USAGE)
        return ChatResult(generations=[ChatGeneration(message=message)])


def fake_model() -> FakeTurnModel:
    """The FAKE zero-latency LLM the benchmark's workers use."""
    return FakeTurnModel()


# --- the stack ---------------------------------------------------------------------------------

# The servers the tests use (tests/conftest.py reads the same variables; not imported from
# there: that would load the whole API app and pytest into this client process).
ADMIN_URL = os.environ.get(
    "QUARRY_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("QUARRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _admin(statement: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def create_database() -> str:
    """A new, empty database; its URL."""
    from sqlalchemy import make_url

    name = f"quarry_bench_turn_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    from sqlalchemy import make_url

    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dataset_csv(rows: int = 1000) -> bytes:
    """A small census-like table (deterministic)."""
    lines = ["age,income,education,workclass"]
    education = ["HS", "BS", "MS", "PhD"]
    workclass = ["Private", "Gov", "Self"]
    for i in range(rows):
        lines.append(
            f"{18 + (i * 7) % 60},{20000 + (i * 7919) % 90000},"
            f"{education[i % 4]},{workclass[(i // 4) % 3]}"
        )
    return ("\n".join(lines) + "\n").encode()


class Stack:
    """A database, a Redis prefix, the API (uvicorn) and Celery workers, all torn down by
    `close` (also after an error or Ctrl-C)."""

    def __init__(self, work: Path, logs: Path, workers: int, api_workers: int) -> None:
        self.work, self.logs = work, logs
        self.redis_url = REDIS_URL
        self.prefix = f"quarry-bench-{uuid.uuid4().hex[:8]}:"
        self.database_url: str | None = None
        self.n_workers, self.api_workers = workers, api_workers
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.base = ""

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("QUARRY_", "LLM_", "OPENAI_", "SANDBOX_"))
        }
        assert self.database_url is not None
        env.update(
            DATABASE_URL=self.database_url,
            DATA_DIR=str(self.work / "data"),
            JWT_SECRET_KEY=secrets.token_urlsafe(48),
            ACCESS_TOKEN_TTL_MINUTES="240",
            REDIS_URL=self.redis_url,
            REDIS_PREFIX=self.prefix,
            LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "INFO"),
            LOG_JSON="true",
            PYTHONPATH=str(ROOT),
            LLM_FACTORY="tests.bench.bench_turn:fake_model",
            SANDBOX_BACKEND="process",
            SANDBOX_UID_BASE="61000",  # apart from the tests' 62000/63000/64000
            WORKER_METRICS_PORT="0",  # two workers here, and maybe others' on 9808
            # the benchmark's one user asks far more than a person would: lift the
            # per-user limits (the checks themselves still run on every turn)
            TURNS_PER_MINUTE_PER_USER="100000",
            MAX_ACTIVE_RUNS_PER_USER="1000",
            REGISTER_MAX_PER_IP_PER_HOUR="100000",
        )
        return env

    def start(self) -> None:
        from alembic import command

        from api.prestart import alembic_config

        self.database_url = create_database()
        command.upgrade(alembic_config(self.database_url), "head")
        env = self.env()
        # one signing key for every process (each env() call makes a new one)
        key = env["JWT_SECRET_KEY"]
        for i in range(self.n_workers):
            command_line = [
                sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                "-Q", "analysis,datasets,maintenance", "--concurrency", "1",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-l", "WARNING", "-n", f"bench-{i}-{uuid.uuid4().hex[:6]}@%h",
            ]  # fmt: skip
            self._spawn(f"worker-{i}", command_line, {**env, "JWT_SECRET_KEY": key})
        port = _free_port()
        command_line = [
            sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        if self.api_workers > 1:
            command_line += ["--workers", str(self.api_workers)]
        api = self._spawn("api", command_line, {**env, "JWT_SECRET_KEY": key})
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if api.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the API did not start; see {self.logs / 'api.log'}")
            time.sleep(0.1)

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=out,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
            )
        self.procs.append((name, proc))
        return proc

    def exited(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]

    def log_tails(self, chars: int = 3000) -> str:
        out = []
        for name, _proc in self.procs:
            path = self.logs / f"{name}.log"
            if path.is_file():
                out.append(f"--- {name}.log (end) ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def close(self) -> None:
        for _name, proc in self.procs:  # warm shutdown: workers close their sandbox pools
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # whatever is left of the group (a zygote, sandboxes)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()
        if self.database_url is not None:
            drop_database(self.database_url)
            self.database_url = None
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            for key in client.scan_iter(f"{self.prefix}*"):
                client.delete(key)
        finally:
            client.close()


# --- one user, one turn ------------------------------------------------------------------------


def _stamp(value: str) -> float:
    """An ISO timestamp of the API's (same host) as epoch seconds."""
    return datetime.fromisoformat(value).timestamp()


@dataclass
class Turn:
    session: str
    number: int  # in its session, from 1
    status: str = "?"
    post_ms: float = 0.0  # POST /messages, sent -> 202
    first_ms: float = 0.0  # accepted -> first SSE event
    done_ms: float = 0.0  # accepted -> `done` SSE event
    sandbox_ms: float = 0.0  # the runner's own time in the sandbox (result.duration_ms)
    first_type: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    question: str = ""
    code: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    checkpoint: dict[str, Any] = field(default_factory=dict)


class User:
    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=httpx.Timeout(120.0, connect=10.0))
        email = f"bench-{secrets.token_hex(4)}@example.com"
        self.http.post(
            "/api/auth/register", json={"email": email, "password": PASSWORD}
        ).raise_for_status()
        login = self.http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        login.raise_for_status()
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        self.http.headers.update(self.headers)

    def client(self) -> httpx.Client:
        """A client of its own (one per thread), signed in as this user."""
        client = httpx.Client(
            base_url=self.http.base_url, timeout=httpx.Timeout(120.0, connect=10.0)
        )
        client.headers.update(self.headers)
        return client

    def dataset(self, content: bytes) -> str:
        response = self.http.post(
            "/api/datasets", files={"file": ("census.csv", content, "text/csv")}
        )
        response.raise_for_status()
        dataset_id = str(response.json()["data"][0]["id"])
        deadline = time.monotonic() + 120
        while True:
            body = self.http.get(f"/api/datasets/{dataset_id}").json()
            if body["status"] != "processing":
                if body["status"] != "ready":
                    raise SystemExit(f"the dataset did not become ready: {body}")
                return dataset_id
            if time.monotonic() > deadline:
                raise SystemExit("the dataset is still processing after 120 s")
            time.sleep(0.05)

    def session(self, dataset_id: str, title: str) -> str:
        response = self.http.post(
            "/api/sessions", json={"title": title, "dataset_ids": [dataset_id]}
        )
        response.raise_for_status()
        return str(response.json()["id"])


def _events(response: httpx.Response) -> Iterator[tuple[float, float, dict[str, Any]]]:
    """(arrival as perf_counter, arrival as epoch, event) for each SSE event of a stream."""
    data: list[str] = []
    for line in response.iter_lines():
        if line:
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            continue  # id:, event:, retry:, comments
        if data:
            yield time.perf_counter(), time.time(), json.loads("\n".join(data))
            data = []


def ask(client: httpx.Client, session_id: str, number: int) -> Turn:
    """One turn, timed as the client sees it."""
    question = f"What is the mean age of the people in the dataset? (question {number})"
    turn = Turn(session=session_id, number=number, question=question)
    for _ in range(100):  # 429 "still answering": never expected (done is sent last)
        sent = time.perf_counter()
        response = client.post(f"/api/sessions/{session_id}/messages", json={"content": question})
        accepted, accepted_wall = time.perf_counter(), time.time()
        if response.status_code != 429:
            break
        time.sleep(0.05)
    response.raise_for_status()
    body = response.json()
    turn.post_ms = (accepted - sent) * 1000
    run_id = body["run_id"]
    created = _stamp(body["run"]["created_at"])
    seen: dict[str, float] = {}  # event type -> its created_at (first of that type)
    with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
        stream.raise_for_status()
        for arrived, arrived_wall, event in _events(stream):
            if not turn.first_type:
                turn.first_type = event["type"]
                turn.first_ms = (arrived - accepted) * 1000
            seen.setdefault(event["type"], _stamp(event["created_at"]))
            payload = event.get("payload") or {}
            if event["type"] == "code":
                turn.code = payload.get("code", "")
            elif event["type"] == "result":
                turn.result = payload
                turn.sandbox_ms = float(payload.get("duration_ms") or 0)
            elif event["type"] == "answer":
                turn.answer = payload.get("content", "")
            elif event["type"] == "done":
                turn.done_ms = (arrived - accepted) * 1000
                turn.status = payload.get("status", "?")
                # server stages, from the events' timestamps (the API's and the workers'
                # clocks are this machine's)
                marks = [("created", created)] + [
                    (kind, seen[kind]) for kind in ("status", "code", "result") if kind in seen
                ]
                marks.append(("done", seen["done"]))
                for (a, ta), (b, tb) in itertools.pairwise(marks):
                    turn.stages[f"{a}->{b}"] = (tb - ta) * 1000
                turn.stages["server total"] = (seen["done"] - created) * 1000
                turn.stages["done delivered"] = (arrived_wall - seen["done"]) * 1000
                turn.stages["created->accepted"] = (accepted_wall - created) * 1000
                break
    return turn


# --- checkpoint bytes -------------------------------------------------------------------------

CHECKPOINT_SQL = """
SELECT 'checkpoints', count(*),
       coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0),
       coalesce(sum(pg_column_size(t.*)), 0)
  FROM checkpoints t WHERE thread_id = :t
UNION ALL
SELECT 'checkpoint_blobs', count(*), coalesce(sum(coalesce(octet_length(blob), 0)), 0),
       coalesce(sum(pg_column_size(t.*)), 0)
  FROM checkpoint_blobs t WHERE thread_id = :t
UNION ALL
SELECT 'checkpoint_writes', count(*), coalesce(sum(octet_length(blob)), 0),
       coalesce(sum(pg_column_size(t.*)), 0)
  FROM checkpoint_writes t WHERE thread_id = :t
"""


def checkpoint_bytes(engine: Any, thread_id: str) -> dict[str, dict[str, int]]:
    """Per table: rows, payload bytes (the checkpoint and metadata JSON as text, the blobs:
    what the saver hands PostgreSQL, uncompressed) and row bytes as stored (whole rows with
    their keys, after PostgreSQL's own compression)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(CHECKPOINT_SQL), {"t": thread_id}).all()
    return {
        str(name): {"rows": int(n), "payload": int(payload), "stored": int(stored)}
        for name, n, payload, stored in rows
    }


def new_content(turn: Turn) -> tuple[int, int]:
    """What one turn adds to the conversation, in bytes: (its text, the same four messages
    serialized as LangGraph's checkpointer serializes them).

    The text is the question + the tool call (tool name and its JSON arguments) + the tool
    result as the model receives it (rebuilt from the `result` event with the worker's own
    summary function, which is what the ToolMessage holds) + the answer. Ids, types and
    metadata are not content. The serialized figure adds exactly that per-message envelope
    (class names, ids, usage): it is what a store that wrote only the new messages, once,
    would write, and shows how much of the ratio is the format rather than the design.
    """
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from worker.agent.tools import Execution

    summary_input = {k: turn.result.get(k) for k in ("ok", "error", "stdout", "result", "tables")}
    summary_input["notes"] = turn.result.get("notes") or []
    tool_text = Execution(id=uuid.uuid4(), result=summary_input).summary()
    arguments = json.dumps({"code": turn.code})
    size = sum(
        len(s.encode()) for s in (turn.question, TOOL_NAME, arguments, tool_text, turn.answer)
    )
    call_id = f"call_{uuid.uuid4().hex}"
    messages = [
        HumanMessage(content=turn.question, id=str(uuid.uuid4())),
        AIMessage(
            content="",
            tool_calls=[{"name": TOOL_NAME, "args": {"code": turn.code}, "id": call_id}],
            id=str(uuid.uuid4()),
            usage_metadata=USAGE,
        ),
        ToolMessage(content=tool_text, tool_call_id=call_id, name=TOOL_NAME, id=str(uuid.uuid4())),
        AIMessage(content=turn.answer, id=str(uuid.uuid4()), usage_metadata=USAGE),
    ]
    serialized = len(JsonPlusSerializer().dumps_typed(messages)[1])
    return size, serialized


# --- the phases --------------------------------------------------------------------------------


class Stopped(Exception):
    pass


STOP = threading.Event()


def warm_up(user: User, dataset_id: str, workers: int) -> list[Turn]:
    """Each worker opens its database pool, checkpointer and sandbox pool on its first turn:
    a few rounds of concurrent turns so that every worker has done that."""
    sessions = [user.session(dataset_id, f"warm-up {i}") for i in range(2 * workers)]
    turns: list[Turn] = []
    for number in (1, 2):
        turns += _concurrently(user, sessions, 1, start=number)
    return turns


def _session_loop(user: User, session_id: str, count: int, start: int) -> list[Turn]:
    turns = []
    with user.client() as client:
        for number in range(start, start + count):
            if STOP.is_set():
                raise Stopped
            turns.append(ask(client, session_id, number))
    return turns


def _concurrently(user: User, sessions: Sequence[str], count: int, start: int = 1) -> list[Turn]:
    with ThreadPoolExecutor(max_workers=len(sessions)) as pool:
        futures = [pool.submit(_session_loop, user, s, count, start) for s in sessions]
        try:
            return [turn for f in futures for turn in f.result()]
        except BaseException:
            STOP.set()
            raise


def latency(user: User, dataset_id: str, turns: int, sessions: int, pause: float) -> list[Turn]:
    ids = [user.session(dataset_id, f"latency {i}") for i in range(sessions)]
    done: list[Turn] = []
    with user.client() as client:
        for i in range(turns):
            done.append(ask(client, ids[i % sessions], i // sessions + 1))
            time.sleep(pause)
    return done


def flatness(
    user: User, dataset_id: str, turns: int, pause: float, engine: Any
) -> tuple[list[Turn], dict[str, dict[str, int]]]:
    session_id = user.session(dataset_id, "flatness")
    before = checkpoint_bytes(engine, session_id)
    out: list[Turn] = []
    with user.client() as client:
        for number in range(1, turns + 1):
            turn = ask(client, session_id, number)
            after = checkpoint_bytes(engine, session_id)
            content, serialized = new_content(turn)
            turn.checkpoint = {
                "payload": sum(t["payload"] for t in after.values())
                - sum(t["payload"] for t in before.values()),
                "stored": sum(t["stored"] for t in after.values())
                - sum(t["stored"] for t in before.values()),
                "rows": {name: after[name]["rows"] - before[name]["rows"] for name in after},
                "by_table": {
                    name: after[name]["payload"] - before[name]["payload"] for name in after
                },
                "content": content,
                "serialized": serialized,
            }
            before = after
            out.append(turn)
            time.sleep(pause)
    return out, before


def throughput(user: User, dataset_id: str, sessions: int, turns: int) -> tuple[list[Turn], float]:
    ids = [user.session(dataset_id, f"load {i}") for i in range(sessions)]
    started = time.perf_counter()
    done = _concurrently(user, ids, turns)
    return done, time.perf_counter() - started


# --- the report ------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def _dist(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 1),
        "p95": round(_pct(values, 95), 1),
        "max": round(max(values), 1),
        "mean": round(statistics.fmean(values), 1),
    }


def _row(label: str, values: Sequence[float], note: str = "") -> str:
    d = _dist(values)
    return f"  {label:<44} {d['p50']:>8.1f} {d['p95']:>8.1f} {d['max']:>8.1f} {d['mean']:>8.1f}" + (
        f"  {note}" if note else ""
    )


def _header(title: str) -> str:
    return f"\n{title}\n  {'(ms)':<44} {'p50':>8} {'p95':>8} {'max':>8} {'mean':>8}"


STAGES = [
    ("created->accepted", "run created -> 202 at the client (POST's own tail)"),
    ("created->status", "queue: run created -> a worker claimed it"),
    ("status->code", "claimed -> tool call (context, checkpoint, model #1)"),
    ("code->result", "code -> result (sandbox + storing the execution)"),
    ("result->done", "result -> done (model #2, checkpoint, settle)"),
    ("server total", "run created -> done written"),
    ("done delivered", "done written -> done at the client (SSE)"),
]


def report(
    args: argparse.Namespace,
    warm: list[Turn],
    lat: list[Turn],
    flat: list[Turn],
    load: list[Turn],
    load_s: float,
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_before": args.load_before,
        "workers": args.workers,
        "api_workers": args.api_workers,
        "pause_s": args.pause,
    }
    every = warm + lat + flat + load
    failed = [t for t in every if t.status != "succeeded"]
    print(
        f"\nQuarry turn benchmark — {os.cpu_count()} CPUs, {args.workers} Celery workers "
        f"(1 process each), {args.api_workers} uvicorn worker(s), process sandbox, "
        "fake zero-latency LLM, one sandbox execution per turn"
    )
    busy = args.load_before > 0.5 * (os.cpu_count() or 1)
    print(
        f"  load average (1 min) before the run: {args.load_before:.2f}"
        + ("  (this machine was busy: numbers are pessimistic)" if busy else "")
    )
    print(
        f"  turns: {len(every)} ({len(warm)} warm-up, {len(lat)} latency, {len(flat)} "
        f"flatness, {len(load)} throughput); not succeeded: {len(failed)}"
        + (f" ({sorted({t.status for t in failed})})" if failed else "")
    )
    if warm:
        print(
            f"  warm-up (first turns of fresh workers): accepted -> done "
            f"max {max(t.done_ms for t in warm):.0f} ms, first round "
            f"{statistics.median(t.done_ms for t in warm[: 2 * args.workers]):.0f} ms p50"
        )

    # 1. latency
    if lat:
        first = [t.first_ms for t in lat]
        done = [t.done_ms for t in lat]
        sandbox = [t.sandbox_ms for t in lat]
        without = [t.done_ms - t.sandbox_ms for t in lat]
        kinds = sorted({t.first_type for t in lat})
        print(
            _header(
                f"1. Per-turn latency: {len(lat)} turns one at a time over {args.sessions} "
                f"sessions, {args.pause} s apart"
            )
        )
        print(_row("POST /messages round trip", [t.post_ms for t in lat]))
        print(_row("accepted -> first event", first, f"(first event: {', '.join(kinds)})"))
        print(_row("accepted -> done", done))
        print(_row("  of which in the sandbox (duration_ms)", sandbox))
        print(_row("accepted -> done, minus sandbox time", without))
        print("  server stages (from the events' timestamps):")
        for key, label in STAGES:
            values = [t.stages[key] for t in lat if key in t.stages]
            if values:
                print(_row(f"  {key}", values, label))
        ok_first = statistics.median(first) <= 40 and _pct(first, 95) <= 120
        ok_done = statistics.median(done) <= 40 and _pct(done, 95) <= 120
        ok_without = statistics.median(without) <= 40 and _pct(without, 95) <= 120
        print(
            f"  target p50 <= 40 ms, p95 <= 120 ms: first event {_mark(ok_first)}, "
            f"done {_mark(ok_done)}, done minus sandbox {_mark(ok_without)}"
        )
        results["latency"] = {
            "turns": len(lat),
            "sessions": args.sessions,
            "post_ms": _dist([t.post_ms for t in lat]),
            "first_event_ms": _dist(first),
            "done_ms": _dist(done),
            "sandbox_ms": _dist(sandbox),
            "done_minus_sandbox_ms": _dist(without),
            "stages_ms": {
                key: _dist([t.stages[key] for t in lat if key in t.stages])
                for key, _ in STAGES
                if any(key in t.stages for t in lat)
            },
            "meets_target": {"first": ok_first, "done": ok_done, "done_minus_sandbox": ok_without},
        }

    # 2. flatness and checkpoints
    if flat:
        n = len(flat)
        k = min(5, max(1, n // 2))
        head, tail = flat[:k], flat[-k:]

        def mean(turns: list[Turn], pick: Callable[[Turn], float]) -> float:
            return statistics.fmean(pick(t) for t in turns)

        print(f"\n2. Flatness: one session of {n} turns, one at a time, {args.pause} s apart")
        print(f"  {'(ms)':<44} {'turn 1':>8} {f'turn {n}':>8} {'ratio':>8}")
        measures: list[tuple[str, Callable[[Turn], float]]] = [
            ("accepted -> done (client)", lambda t: t.done_ms),
            ("server: run created -> done written", lambda t: t.stages["server total"]),
            ("server: claimed -> done (worker's turn)", _worker_ms),
        ]
        flat_rows: dict[str, Any] = {}
        for label, pick in measures:
            a, b = pick(flat[0]), pick(flat[-1])
            ma, mb = mean(head, pick), mean(tail, pick)
            print(f"  {label:<44} {a:>8.1f} {b:>8.1f} {_ratio(b, a):>7.2f}x")
            print(
                f"  {f'  mean of turns 1-{k} vs {n - k + 1}-{n}':<44} {ma:>8.1f} {mb:>8.1f} "
                f"{_ratio(mb, ma):>7.2f}x"
            )
            flat_rows[label] = {
                "turn_1": round(a, 1),
                f"turn_{n}": round(b, 1),
                "ratio": round(_ratio(b, a), 2),
                "head_mean": round(ma, 1),
                "tail_mean": round(mb, 1),
                "mean_ratio": round(_ratio(mb, ma), 2),
            }
        marks = sorted({1, *range(10, n + 1, 10), n})
        for label, pick in measures:
            trend = ", ".join(f"{i}: {mean(flat[max(0, i - 3) : i + 2], pick):.0f}" for i in marks)
            print(f"  {label}, by turn (mean of 5 around it): {trend}")
        client_ratio = flat_rows["accepted -> done (client)"]["mean_ratio"]
        worker_ratio = flat_rows["server: claimed -> done (worker's turn)"]["mean_ratio"]
        ok_flat = client_ratio <= 1.5
        print(
            f"  target turn {n} within 1.5x of turn 1 (judged on the means of {k}: single "
            f"turns are noisy): client {_mark(ok_flat)} ({client_ratio:.2f}x), worker "
            f"{_mark(worker_ratio <= 1.5)} ({worker_ratio:.2f}x)"
        )

        print(
            "\n  Checkpoint bytes added per turn (LangGraph tables, this thread) vs the "
            "turn's new content"
        )
        print(
            f"  {'turn':>6} {'rows c/b/w':>12} {'payload':>9} {'stored':>8} {'content':>8} "
            f"{'ratio':>7} {'serialized':>11} {'ratio':>7}"
        )
        shown = sorted({1, min(10, n), min(25, n), n, _biggest(flat)})
        for i in shown:
            c = flat[i - 1].checkpoint
            rows = c["rows"]
            print(
                f"  {i:>6} {rows['checkpoints']:>4}/{rows['checkpoint_blobs']}/"
                f"{rows['checkpoint_writes']:<5} {c['payload']:>9} {c['stored']:>8} "
                f"{c['content']:>8} {c['payload'] / c['content']:>6.1f}x "
                f"{c['serialized']:>11} {c['payload'] / c['serialized']:>6.1f}x"
                + ("  (largest)" if i == _biggest(flat) and i not in (1, n) else "")
            )
        payloads = [t.checkpoint["payload"] for t in flat]
        contents = [t.checkpoint["content"] for t in flat]
        ratios = [p / c for p, c in zip(payloads, contents, strict=True)]
        stored_ratios = [t.checkpoint["stored"] / t.checkpoint["content"] for t in flat]
        by_table = {
            name: round(statistics.fmean(t.checkpoint["by_table"][name] for t in flat))
            for name in flat[0].checkpoint["by_table"]
        }
        print(
            f"  mean per turn: payload {statistics.fmean(payloads):.0f} B "
            f"({', '.join(f'{k_}: {v}' for k_, v in by_table.items())}), content "
            f"{statistics.fmean(contents):.0f} B; ratio mean {statistics.fmean(ratios):.1f}x, "
            f"max {max(ratios):.1f}x (stored: mean {statistics.fmean(stored_ratios):.1f}x, "
            f"max {max(stored_ratios):.1f}x)"
        )
        ok_bytes = max(ratios) <= 3
        print(f"  target <= 3x the new content, every turn: {_mark(ok_bytes)}")
        results["flatness"] = {
            "turns": n,
            "measures": flat_rows,
            "meets_target": ok_flat,
            "done_ms_by_turn": [round(t.done_ms, 1) for t in flat],
            "worker_ms_by_turn": [round(_worker_ms(t), 1) for t in flat],
        }
        results["checkpoints"] = {
            "by_turn": [{"turn": i + 1, **t.checkpoint} for i, t in enumerate(flat)],
            "ratio_mean": round(statistics.fmean(ratios), 2),
            "ratio_max": round(max(ratios), 2),
            "meets_target": ok_bytes,
        }

    # 3. throughput
    if load:
        rate = len(load) / load_s
        print(
            f"\n3. Throughput: {args.load_sessions} sessions at once, {args.load_turns} "
            f"turns each, {args.workers} workers"
        )
        print(f"  {len(load)} turns in {load_s:.1f} s: {rate:.1f} turns/s")
        print(_header("  latency under that load").lstrip("\n"))
        print(_row("accepted -> first event", [t.first_ms for t in load]))
        print(_row("accepted -> done", [t.done_ms for t in load]))
        print(_row("  queue: run created -> claimed", [t.stages["created->status"] for t in load]))
        print(_row("  worker: claimed -> done written", [_worker_ms(t) for t in load]))
        results["throughput"] = {
            "sessions": args.load_sessions,
            "turns_each": args.load_turns,
            "seconds": round(load_s, 2),
            "turns_per_s": round(rate, 2),
            "done_ms": _dist([t.done_ms for t in load]),
            "worker_ms": _dist([_worker_ms(t) for t in load]),
        }
    results["failed"] = [asdict(t) for t in failed][:20]
    return results


def _worker_ms(turn: Turn) -> float:
    return sum(turn.stages.get(k, 0.0) for k in ("status->code", "code->result", "result->done"))


def _biggest(flat: list[Turn]) -> int:
    return max(range(len(flat)), key=lambda i: flat[i].checkpoint["payload"]) + 1


# --- main ------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=100, help="latency: turns, one at a time")
    parser.add_argument("--sessions", type=int, default=4, help="latency: sessions they go to")
    parser.add_argument("--flat-turns", type=int, default=50, help="flatness: one session's turns")
    parser.add_argument("--load-sessions", type=int, default=8, help="throughput: sessions")
    parser.add_argument("--load-turns", type=int, default=10, help="throughput: turns each")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between sequential turns")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (few turns)")
    parser.add_argument("--logs", type=Path, help="keep the API's and workers' logs here")
    args = parser.parse_args()
    if args.quick:
        args.turns, args.sessions, args.flat_turns = 10, 2, 6
        args.load_sessions, args.load_turns = 4, 3

    args.load_before = os.getloadavg()[0]
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="quarry-bench-turn-"))
    stack: Stack | None = None
    engine: Any = None
    try:
        logs = args.logs or work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stack = Stack(work, logs, args.workers, args.api_workers)
        print(f"starting the stack (logs: {logs})", file=sys.stderr)
        stack.start()
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        assert stack.database_url is not None
        engine = create_engine(stack.database_url, poolclass=NullPool)
        user = User(stack.base)
        dataset_id = user.dataset(_dataset_csv())
        print("warming up", file=sys.stderr)
        warm = warm_up(user, dataset_id, args.workers)
        print(f"latency: {args.turns} turns", file=sys.stderr)
        lat = latency(user, dataset_id, args.turns, args.sessions, args.pause)
        print(f"flatness: {args.flat_turns} turns in one session", file=sys.stderr)
        flat, _ = flatness(user, dataset_id, args.flat_turns, args.pause, engine)
        print(
            f"throughput: {args.load_sessions} sessions x {args.load_turns} turns",
            file=sys.stderr,
        )
        load, load_s = throughput(user, dataset_id, args.load_sessions, args.load_turns)
        dead = stack.exited()
        user.http.close()
        results = report(args, warm, lat, flat, load, load_s)
        if dead:
            print(f"  note: these processes exited during the run: {dead}")
    except (KeyboardInterrupt, Stopped):
        STOP.set()
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception:
        if stack is not None:
            print(stack.log_tails(), file=sys.stderr)
        raise
    finally:
        STOP.set()
        if engine is not None:
            engine.dispose()
        if stack is not None:
            stack.close()
        shutil.rmtree(work, ignore_errors=True)

    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "turn.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
