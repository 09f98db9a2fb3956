"""What the fault tests share: private servers to break (a Redis and a PostgreSQL cluster
of their own, never the machine's shared ones), a Stack whose workers log to files, an API
run as a real uvicorn process, and the checks every fault test makes on the runs it asked.

The checks (`Ledger.audit`): every run ends `succeeded`/`failed`/`cancelled`; a failed
run's error is a sentence, not a traceback or exception class soup; each question has
exactly one user message and one run, at most one answer; a run was claimed (its
`running` status event) exactly `attempts` times; and the API answers 2xx again within
5 s of the fault ending (`api_back_within`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from tests.conftest import TEST_SECRET
from tests.factories import User
from tests.test_agent_integration import Stack

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
FINISHED = ("succeeded", "failed", "cancelled")
TOOL_SCRIPT = "tests.agent_models:tool_script"

# Settings every fault stack gets: short intervals, so that a fault is noticed in seconds.
FAST = {
    "llm_factory": TOOL_SCRIPT,
    "reaper_interval_s": 0.5,
    "run_claim_timeout_s": 3,
    "run_stale_after_s": 4,
    "run_heartbeat_s": 0.5,
    "worker_heartbeat_s": 0.5,
    "sandbox_timeout_s": 10,
    # the API in a subprocess reads these from its environment (make_settings sets them
    # for the in-process API only)
    "argon2_time_cost": 1,
    "argon2_memory_cost_kib": 1024,
    "argon2_parallelism": 1,
    "register_max_per_ip_per_hour": 10_000,
    "login_max_failures_per_ip": 10_000,
    "turns_per_minute_per_user": 1000,  # clients ask as fast as they are answered
    "worker_metrics_port": 0,  # several workers on one machine: no port to fight over
}

# What a user must never read as an error: a traceback, a module path, an exception class.
SOUP = re.compile(
    r"Traceback|File \"|\b(?:psycopg2?|psycopg_pool|sqlalchemy|redis|kombu|celery|builtins)\.|"
    r"\b[A-Z][A-Za-z]*(?:Error|Exception)\b|<[\w.]+ object at 0x|\(Background on this error"
)


def unreadable(error: str | None) -> str | None:
    """Why `error` is not for a user, or None when it is."""
    if not error:
        return "no error message"
    if len(error) >= 1000:
        return f"{len(error)} characters: {error[:300]!r}"
    found = SOUP.search(error)
    return f"not for a user ({found.group(0)!r}): {error!r}" if found else None


def assert_readable(error: str | None, what: str = "error") -> None:
    problem = unreadable(error)
    assert problem is None, f"{what}: {problem}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float, step: float = 0.1
) -> float:
    """Seconds it took; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def _kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def tail(path: Path, size: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode(errors="replace")


# --- a Redis of our own -----------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a free loopback port, no persistence: stopping it loses
    every message, as a restarted or failed-over Redis without persistence does."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        assert self.proc is None
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def pong() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, tail(self.log)
            with contextlib.suppress(redis.RedisError), self.client() as client:
                return bool(client.ping())
            return False

        wait_until(pong, f"redis-server on {self.port}", 10, 0.05)

    def stop(self) -> None:
        """Gone at once (SIGKILL), with whatever it held."""
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# --- a PostgreSQL cluster of our own ------------------------------------------------------------


class PgCluster:
    """A private PostgreSQL 15 cluster (initdb into a temporary folder owned by `postgres`,
    pg_ctl on a free port, its socket in that folder), run as the postgres user: tests run
    as root, which PostgreSQL refuses."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="quarry-faults-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        owner = pwd.getpwnam("postgres")
        os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.running = False

    def _pg(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        said = (done.stdout[-2000:], done.stderr[-2000:], tail(self.log))
        assert done.returncode == 0, (args, said)

    def init(self) -> None:
        self._pg(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                 "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        # in its configuration too: however it is started, never on the shared server's port
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\n"
            )

    def start(self) -> None:
        # (always with these options: a plain `pg_ctl start` would take the default port,
        # the shared server's)
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                 "-t", "60", "-o", options, "start")  # fmt: skip
        self.running = True

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is dropped, the server comes back."""
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        self._pg(*pg_ctl, "-w", "-t", "60", "-m", "fast", "restart")

    def down_for(self, seconds: float) -> None:
        """Stopped (`-m fast`: connections dropped), kept down `seconds`, started again."""
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        self._pg(*pg_ctl, "-w", "-t", "60", "-m", "fast", "stop")
        self.running = False
        time.sleep(seconds)
        self.start()

    def stop(self) -> None:
        if self.running:
            self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-m",
                     "immediate", "stop")  # fmt: skip
            self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        from alembic import command

        from api.prestart import alembic_config

        name = f"quarry_fault_{uuid.uuid4().hex[:8]}"
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = self.url(name)
        command.upgrade(alembic_config(url), "head")
        return url

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self.running:  # could not stop it cleanly: end the postmaster by its pid
            with contextlib.suppress(Exception):
                pid = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


# --- the stack --------------------------------------------------------------------------------


class FaultStack(Stack):
    """tests/test_agent_integration.py's Stack (in-process API, real Celery workers) whose
    workers write their logs to files (a pipe nobody reads fills up and stops a worker that
    logs a reconnect loop), and whose clean-up survives a broker that is down."""

    def __init__(self, pg_url: str, redis_url: str, data_dir: Path, **overrides: Any) -> None:
        super().__init__(pg_url, redis_url, data_dir, **{**FAST, **overrides})
        self.logs = data_dir.parent / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # (a worker with --beat keeps its schedule there, and stops if the folder is missing)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.worker_logs: list[Path] = []
        self.engine: Engine = create_engine(pg_url, poolclass=NullPool)
        self.apis: list[ApiProcess] = []

    def start_worker(self, beat: bool = False, **extra: Any) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.worker_logs)}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", "analysis,datasets,maintenance", "--concurrency", "1",
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
            "-n", f"fault-{uuid.uuid4().hex[:6]}@%h",
        ]  # fmt: skip
        if beat:
            command.append("--beat")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env(**extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        self.worker_logs.append(log)
        return proc

    def log_text(self) -> str:
        """Everything the workers logged."""
        return "\n".join(p.read_text(errors="replace") for p in self.worker_logs if p.exists())

    def said(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in self.worker_logs)

    def start_api_process(self, **extra: Any) -> ApiProcess:
        api = ApiProcess(self.env(**extra), self.logs / f"api-{len(self.apis)}.log")
        self.apis.append(api)
        api.start()
        return api

    def close(self) -> None:
        for api in self.apis:
            api.kill()
        self.stop_api()
        self.kill_workers()
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
            for key in client.scan_iter(f"{self.prefix}*"):
                client.delete(key)
            client.close()
        self.engine.dispose()

    # --- asking, as a user -----------------------------------------------------------------
    def wait_run(self, user: User, run_id: str, timeout: float = 90) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def settled() -> bool:
            dead = [p.pid for p in self.workers if p.poll() is not None]
            assert not dead, f"worker {dead} exited; {self.said()}"
            response = self.client.get(f"/api/runs/{run_id}", headers=user.headers)
            if response.status_code == 200:
                found.update(response.json())
            return found.get("status") in FINISHED

        try:
            wait_until(settled, f"run {run_id} settled", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it is {found.get('status')}; {self.said()}") from None
        return found

    def worker_pids(self, proc: subprocess.Popen[bytes]) -> set[int]:
        """The worker's main process and its prefork children (and beat's)."""
        import psutil

        try:
            main = psutil.Process(proc.pid)
            return {proc.pid, *(c.pid for c in main.children())}
        except psutil.NoSuchProcess:
            return set()


@pytest.fixture
def fault_stack(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., FaultStack]]:
    """`fault_stack(pg_url=..., redis_url=..., **settings)`: a FaultStack, closed after the
    test whatever happened (defaults: the session's database and the shared Redis under a
    key prefix of its own)."""
    stacks: list[FaultStack] = []

    def make(**overrides: Any) -> FaultStack:
        # (the shared server only when asked for: a private one spares it)
        pg = overrides.pop("pg_url", None) or request.getfixturevalue("pg_url")
        broker = overrides.pop("redis_url", None) or request.getfixturevalue("redis_url")
        stack = FaultStack(pg, broker, tmp_path / f"stack{len(stacks)}" / "data", **overrides)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


# --- the API as a process -----------------------------------------------------------------------


class ApiProcess:
    """`uvicorn api.main:app` on a free port, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        command = [
            sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
            "--port", str(self.port), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, tail(self.log)
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            return False

        wait_until(up, f"the API on {self.port}", timeout, 0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            _kill_group(self.proc, sig)
            self.proc = None


def http_user(client: httpx.Client) -> User:
    """A new account, signed in, through a real HTTP API."""
    email = f"fault-{uuid.uuid4().hex[:12]}@example.com"
    password = "correct horse battery staple"
    created = client.post("/api/auth/register", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    tokens = client.post("/api/auth/login", json={"email": email, "password": password})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return User(
        id=created.json()["id"],
        email=email,
        password=password,
        tokens=body,
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )


# --- what every fault test checks -------------------------------------------------------------


@dataclass
class Asked:
    """One question a test asked, and how the API answered it."""

    user: User
    session_id: str
    question: str
    status_code: int
    run_id: str | None
    asked_at: float  # time.monotonic()
    seconds: float  # how long the POST took
    body: str = ""
    run: dict[str, Any] = field(default_factory=dict)


class Ledger:
    """Every question asked during a fault, from any thread, and the checks on them."""

    def __init__(self) -> None:
        self.asked: list[Asked] = []
        self._lock = threading.Lock()

    def ask(self, stack: FaultStack, user: User, session_id: str, question: str) -> Asked:
        started = time.monotonic()
        try:
            response = stack.client.post(
                f"/api/sessions/{session_id}/messages",
                headers=user.headers,
                json={"content": question},
            )
            code, body = response.status_code, response.text
        except Exception as exc:  # the in-process API raised instead of answering
            code, body = 0, f"{type(exc).__name__}: {exc}"
        run_id = None
        if code == 202:
            run_id = str(response.json()["run_id"])
        asked = Asked(user, session_id, question, code, run_id, started,
                      time.monotonic() - started, body)  # fmt: skip
        with self._lock:
            self.asked.append(asked)
        return asked

    @property
    def runs(self) -> list[Asked]:
        return [a for a in self.asked if a.run_id is not None]

    def summary(self, engine: Engine) -> str:
        """What became of the runs (printed before the audit, which may fail)."""
        ids = [a.run_id for a in self.runs]
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, attempts, requeues, error, "
                    "extract(epoch FROM finished_at - created_at) AS waited "
                    "FROM runs WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": ids},
            ).all()
        statuses: dict[str, int] = {}
        for row in rows:
            statuses[row.status] = statuses.get(row.status, 0) + 1
        refused = [(a.status_code, a.body[:200]) for a in self.asked if a.run_id is None]
        errors = sorted({str(r.error)[:300] for r in rows if r.error})
        waited = sorted(round(float(r.waited), 1) for r in rows if r.waited is not None)
        slow = []
        with engine.connect() as conn:
            for row in conn.execute(
                text(
                    "SELECT r.id, r.created_at, r.attempts, r.requeues, r.status, "
                    "string_agg(e.type || coalesce(':' || (e.payload->>'status'), '') || '@' || "
                    "round(extract(epoch FROM e.created_at - r.created_at)::numeric, 1), ' ' "
                    "ORDER BY e.seq) AS timeline "
                    "FROM runs r LEFT JOIN run_events e ON e.run_id = r.id "
                    "WHERE r.id = ANY(CAST(:ids AS uuid[])) "
                    "AND r.finished_at - r.created_at > interval '5 seconds' "
                    "GROUP BY r.id ORDER BY r.created_at"
                ),
                {"ids": ids},
            ).all():
                slow.append(f"  slow run {row.id} ({row.status}, attempts {row.attempts}, "
                            f"resends {row.requeues}): {row.timeline}")  # fmt: skip
        return (
            "\n".join(slow)
            + ("\n" if slow else "")
            + f"{len(self.asked)} questions, {len(rows)} runs {statuses}; attempts "
            f"{sorted(r.attempts for r in rows)}; resends {sorted(r.requeues for r in rows)}; "
            f"waited (s) {waited}; refused/failed requests {refused}; run errors {errors}"
        )

    def audit(self, engine: Engine, *, attempts: int | None = 1) -> dict[str, dict[str, Any]]:
        """The database's view of every question: one message and one run each, the run
        ended, readable errors, claimed `attempts` times (None: once or twice). Fails with
        every violation found (not only the first). Returns the runs by id."""
        found: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        with engine.connect() as conn:
            for asked in self.asked:
                questions = conn.execute(
                    text(
                        "SELECT id, run_id FROM messages WHERE session_id = :s AND role = 'user' "
                        "AND content = :q"
                    ),
                    {"s": asked.session_id, "q": asked.question},
                ).all()
                stored = [str(q.run_id) for q in questions]
                if asked.run_id is None:
                    # refused (429) or failed: nothing stored, or stored once with a run
                    if len(questions) > 1 or (asked.status_code < 500 and questions):
                        problems.append(f"{asked.question!r} ({asked.status_code}): {stored}")
                    if asked.status_code >= 500 or asked.status_code == 0:
                        problem = unreadable(_error_message(asked.body))
                        if problem:
                            problems.append(f"the API answered {asked.status_code}: {problem}")
                    run_ids = [r for r in stored if r != "None"]
                else:
                    if stored != [asked.run_id]:
                        problems.append(f"{asked.question!r}: messages of runs {stored}")
                    run_ids = [asked.run_id]
                for run_id in run_ids:
                    found[run_id] = self._audit_run(conn, run_id, attempts, problems)
                    if asked.run_id == run_id:
                        asked.run = found[run_id]
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
        return found

    @staticmethod
    def _audit_run(
        conn: Any, run_id: str, attempts: int | None, problems: list[str]
    ) -> dict[str, Any]:
        run = conn.execute(
            text(
                "SELECT status, error, attempts, requeues, created_at, started_at, finished_at "
                "FROM runs WHERE id = :r"
            ),
            {"r": run_id},
        ).one()
        row = dict(run._mapping)
        status = row["status"] = str(row["status"]).lower()
        if status not in FINISHED:
            problems.append(f"run {run_id} left {status}")
        elif status != "succeeded":
            problem = unreadable(row["error"])
            if problem:
                problems.append(f"run {run_id} {status}: {problem}")
        roles = {
            str(role).lower(): n
            for role, n in conn.execute(
                text("SELECT role, count(*) FROM messages WHERE run_id = :r GROUP BY role"),
                {"r": run_id},
            ).all()
        }
        answers = roles.get("assistant", 0)
        if roles.get("user") != 1 or answers > 1 or (status == "succeeded" and answers != 1):
            problems.append(f"run {run_id} ({status}): messages {roles}")
        claims = conn.execute(
            text(
                "SELECT count(*) FROM run_events WHERE run_id = :r AND type = 'status' "
                "AND payload->>'status' = 'running'"
            ),
            {"r": run_id},
        ).scalar()
        dones = conn.execute(
            text("SELECT count(*) FROM run_events WHERE run_id = :r AND type = 'done'"),
            {"r": run_id},
        ).scalar()
        row["claims"], row["dones"] = claims, dones
        if claims != row["attempts"] or dones != 1:
            problems.append(
                f"run {run_id}: {claims} `running` events, {row['attempts']} attempts, "
                f"{dones} `done` events"
            )
        expected = (attempts,) if attempts is not None else (1, 2)
        if status != "cancelled" and row["attempts"] not in expected:
            problems.append(f"run {run_id}: {row['attempts']} attempts, expected {expected}")
        if row["finished_at"] is not None:
            row["waited_s"] = (row["finished_at"] - row["created_at"]).total_seconds()
        return row


def _error_message(body: str) -> str:
    import json

    try:
        return str(json.loads(body)["error"]["message"])
    except Exception:
        return body


PROBES = ("GET /healthz", "GET /api/sessions", "POST /api/sessions")


def api_back_within(
    request: Callable[[str, str], Any], limit: float = 5.0, probes: tuple[str, ...] = PROBES
) -> float:
    """Seconds until every probe ("METHOD /path": a liveness probe, a read and a write by
    a signed-in user) answers 2xx; `request(method, path)` returns a response or raises.
    Fails past `limit`."""

    def ok() -> bool:
        for probe in probes:
            method, path = probe.split(" ", 1)
            try:
                if not 200 <= request(method, path).status_code < 300:
                    return False
            except Exception:
                return False
        return True

    return wait_until(ok, f"the API answers 2xx to {probes}", limit, 0.05)


def probe_as(client: Any, user: User, **options: Any) -> Callable[[str, str], Any]:
    """`api_back_within`'s request, through `client` (a TestClient, or an httpx client
    with `timeout=`)."""

    def request(method: str, path: str) -> Any:
        body = {"dataset_ids": []} if method == "POST" else None
        return client.request(method, path, headers=user.headers, json=body, **options)

    return request


def answer_of(stack: FaultStack, asked: Asked) -> str:
    with stack.engine.connect() as conn:
        found = conn.execute(
            text("SELECT content FROM messages WHERE run_id = :r AND role = 'assistant'"),
            {"r": asked.run_id},
        ).scalar()
    return str(found or "")


def stats(values: list[float]) -> str:
    """p50/p95/max in ms."""
    if not values:
        return "no samples"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    top = ordered[-1] * 1000
    return f"n={len(ordered)} p50={at(0.5):.1f}ms p95={at(0.95):.1f}ms max={top:.1f}ms"


def secret_env() -> dict[str, str]:
    return {"JWT_SECRET_KEY": TEST_SECRET}
