"""Processes for the load and soak benchmarks: start them, measure their memory, stop them
(and everything they left behind) whatever happens.

`Procs` starts commands in sessions of their own (Ctrl-C reaches the benchmark only), logs
each to a file, and on `close` stops them in reverse order: SIGTERM to the group, SIGKILL
after a grace period, then SIGKILL to every descendant it has ever seen (a sandbox zygote
runs in a session of its own, so killing a worker's group does not reach it).

`LoadStack` is the compose-like topology of `make bench-load`: a fresh PostgreSQL database,
a Redis key prefix, a FAKE OpenAI-compatible LLM (tests/bench/fake_llm.py), N API processes
(`uvicorn api.main:app`, one port each: replicas behind a balancer) and N Celery workers
(`celery -A worker.celery_app worker -Q analysis,datasets,maintenance`, the first with
`--beat`) with the process sandbox.

`memory()` reads RSS (and PSS, which does not count shared pages twice) per role.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

from tests.bench.bench_turn import ADMIN_URL, REDIS_URL, _free_port

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class Procs:
    """Processes the benchmark started, stopped in reverse order by `close`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.items: list[Proc] = []
        self.seen: dict[int, float] = {}  # pid -> create_time of every descendant seen

    def spawn(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.items.append(Proc(name, popen, log))
        return popen

    def get(self, name: str) -> Proc:
        return next(p for p in self.items if p.name == name)

    def exited(self) -> dict[str, int]:
        return {p.name: code for p in self.items if (code := p.popen.poll()) is not None}

    def remember(self, pids: Iterable[int] | None = None) -> None:
        """Note every descendant now alive (so that `close` can stop what outlives its
        parent); with `pids`, those and their descendants."""
        roots = list(pids) if pids is not None else [p.popen.pid for p in self.items]
        for pid in roots:
            try:
                proc = psutil.Process(pid)
                for q in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        self.seen[q.pid] = q.create_time()
            except psutil.Error:
                continue

    def close(self, grace_s: float = 20.0, keep: tuple[str, ...] = ()) -> dict[str, str]:
        """Stop every process (but those named in `keep`): SIGTERM to all at once, SIGKILL
        to what is still running after `grace_s`. Returns how each stopped."""
        self.remember()
        stopping = [p for p in reversed(self.items) if p.name not in keep]
        started = time.monotonic()
        for p in stopping:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGTERM)
        how: dict[str, str] = {}
        for p in stopping:
            try:
                code = p.popen.wait(timeout=max(0.1, started + grace_s - time.monotonic()))
                how[p.name] = f"exit {code} after {time.monotonic() - started:.1f} s"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
                how[p.name] = f"still running after {grace_s:.0f} s: SIGKILL"
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            self.items.remove(p)
        if not self.items:
            self.kill_seen()
        return how

    def kill_seen(self) -> list[int]:
        """SIGKILL every remembered descendant still alive (same pid, same start time)."""
        killed = []
        for pid, created in list(self.seen.items()):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.01:
                    proc.kill()
                    killed.append(pid)
        self.seen.clear()
        return killed


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s; see {log}")
        time.sleep(0.2)


def log_tail(path: Path, chars: int = 2500) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# --- memory ------------------------------------------------------------------------------------


def _cpu_s(proc: psutil.Process) -> float:
    """CPU seconds of a process and of its children it has waited for."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Mem:
    """Processes of one role: how many, RSS and PSS (MB)."""

    count: int = 0
    rss: float = 0.0
    pss: float = 0.0
    cpu_s: float = 0.0  # user + system, with the children each has waited for

    def add(self, proc: psutil.Process, pss: bool) -> None:
        with contextlib.suppress(psutil.Error):
            self.cpu_s += _cpu_s(proc)
            if pss:
                info = proc.memory_full_info()
                self.pss += info.pss / MB
                self.rss += info.rss / MB
            else:
                self.rss += proc.memory_info().rss / MB
            self.count += 1

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "rss_mb": round(self.rss, 1), "pss_mb": round(self.pss, 1)}


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def worker_memory(pid: int, pss: bool) -> dict[str, Mem]:
    """A Celery worker: its main process, the pool processes (and beat), the sandbox zygotes,
    the sandbox children they forked, and anything else (an upload's converter)."""
    out = {k: Mem() for k in ("main", "pool", "zygotes", "sandboxes", "other")}
    try:
        main = psutil.Process(pid)
    except psutil.Error:
        return out
    out["main"].add(main, pss)
    for child in main.children(recursive=True):
        cmd = _cmdline(child)
        if "worker.sandbox.zygote" in cmd:
            with contextlib.suppress(psutil.Error):
                parent = child.parent()
                in_zygote = parent is not None and "worker.sandbox.zygote" in _cmdline(parent)
                out["sandboxes" if in_zygote else "zygotes"].add(child, pss)
                continue
        try:
            parent_pid = child.ppid()
        except psutil.Error:
            continue
        out["pool" if parent_pid == pid else "other"].add(child, pss)
    return out


def tree_memory(pid: int, pss: bool) -> Mem:
    mem = Mem()
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        for q in [proc, *proc.children(recursive=True)]:
            mem.add(q, pss)
    return mem


def postgres_memory(database: str, pss: bool) -> Mem:
    """The PostgreSQL backends serving one database."""
    mem = Mem()
    needle = f" {database} "
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if cmd.startswith("postgres:") and needle in cmd + " ":
            mem.add(proc, pss)
    return mem


def named_memory(name: str, pss: bool) -> Mem:
    mem = Mem()
    for proc in psutil.process_iter(["name"]):
        if proc.info.get("name") == name:
            mem.add(proc, pss)
    return mem


def sandbox_zygotes() -> dict[int, float]:
    """Every sandbox zygote on this host: pid -> create time."""
    found = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        if "worker.sandbox.zygote" in " ".join(proc.info.get("cmdline") or []):
            parent = None
            with contextlib.suppress(psutil.Error):
                parent = proc.parent()
            if parent is None or "worker.sandbox.zygote" not in _cmdline(parent):
                found[proc.pid] = proc.info["create_time"]
    return found


def snapshot(
    items: list[tuple[str, int]],
    database: str | None,
    pss: bool,
    me: int,
    ports: list[int] | None = None,
) -> dict[str, Any]:
    """Memory (RSS, and PSS when asked) and CPU seconds of every process of the stack by
    role, every pid seen (with its start time), and, with `ports` (client ports of
    PostgreSQL connections), which role holds each. Reads /proc for hundreds of processes:
    run it in a process of its own (in the load generator's it would hold the GIL for
    long stretches and stall the event loop)."""
    memory: dict[str, Any] = {}
    cpu: dict[str, float] = {}
    seen: dict[int, float] = {}
    roles: dict[int, str] = {}
    for name, pid in items:
        if name.startswith("worker"):
            parts = worker_memory(pid, pss)
            memory[name] = {k: v.as_dict() for k, v in parts.items()}
            for part, m in parts.items():
                cpu[f"{name} {part}"] = round(m.cpu_s, 2)
        else:
            memory[name] = tree_memory(pid, pss).as_dict()
        total = 0.0
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for q in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += _cpu_s(q)
                    seen[q.pid] = q.create_time()
                    roles[q.pid] = name
        cpu[name] = round(total, 2)
    if database is not None:
        memory["postgres backends"] = postgres_memory(database, pss).as_dict()
    memory["redis-server (shared)"] = named_memory("redis-server", pss).as_dict()
    generator = Mem()
    ours = {pid for _, pid in items}
    with contextlib.suppress(psutil.Error):
        gen = psutil.Process(me)
        generator.add(gen, pss)
        cpu["load generator"] = round(_cpu_s(gen), 2)
        for child in gen.children():  # its helpers (the health probe, this process)
            if child.pid not in ours:
                generator.add(child, pss)
    memory["load generator"] = generator.as_dict()
    by_role: dict[str, int] | None = None
    if ports is not None:
        owners = {}
        with contextlib.suppress(psutil.Error):
            for c in psutil.net_connections("tcp"):
                if c.raddr and c.laddr and c.pid:
                    owners[c.laddr.port] = c.pid
        by_role = {}
        for port in ports:
            pid = owners.get(port)
            role = "benchmark" if pid == me else roles.get(pid or -1, f"other (pid {pid})")
            by_role[role] = by_role.get(role, 0) + 1
    return {"memory": memory, "cpu_s": cpu, "seen": seen, "pg_by_role": by_role}


# --- the load stack ----------------------------------------------------------------------------


def admin(url: str, statement: str) -> Any:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            result = conn.execute(text(statement))
            return result.all() if result.returns_rows else None
    finally:
        engine.dispose()


def create_database(admin_url: str, prefix: str) -> str:
    from sqlalchemy import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy import make_url

    admin(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def connection_room(admin_url: str) -> tuple[int, int]:
    """(max_connections, client connections now) of a PostgreSQL server."""
    rows = admin(
        admin_url,
        "SELECT current_setting('max_connections')::int, count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend'",
    )
    return int(rows[0][0]), int(rows[0][1])


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of the benchmark's own (a temporary folder, a free port, as
    many connections as asked), removed by `close`: the machine's shared server keeps its
    connections for whoever else uses it."""

    def __init__(self, procs: Procs, max_connections: int) -> None:
        self.procs = procs
        self.max_connections = max_connections
        self.folder = Path(tempfile.mkdtemp(prefix="quarry-bench-pg-"))
        self.port = _free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def available() -> bool:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return (PG_BIN / "initdb").is_file() and os.getuid() == 0

    def start(self) -> None:
        data = self.folder / "data"
        shutil.chown(self.folder, "postgres", "postgres")
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            user="postgres",
            group="postgres",
            capture_output=True,
            check=True,
            cwd=self.folder,
            timeout=120,
        )
        log = self.procs.logs / "postgres.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.folder}",
                    "-c",
                    f"max_connections={self.max_connections}",
                ],
                user="postgres",
                group="postgres",
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # stopped last (Procs stops in reverse order)
        self.procs.items.insert(0, Proc("postgres", popen, log))
        deadline = time.monotonic() + 60
        while True:
            try:
                admin(self.url, "SELECT 1")
                return
            except Exception:
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the private PostgreSQL did not start; see {log}") from None
                time.sleep(0.2)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def delete_redis_prefix(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    n = 0
    try:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            n += int(client.delete(key))
    finally:
        client.close()
    return n


@dataclass
class LoadStack:
    work: Path
    logs: Path
    apis: int = 2
    workers: int = 2
    concurrency: int = 16
    llm_min_s: float = 1.0
    llm_max_s: float = 3.0
    source: Path = ROOT  # the product's code (another checkout: a before/after comparison)
    extra_env: dict[str, str] = field(default_factory=dict)
    postgres: str = "auto"  # shared (the machine's server), private (our own), auto
    admin_url: str = ADMIN_URL
    pg_note: str = ""
    redis_url: str = REDIS_URL
    prefix: str = field(default_factory=lambda: f"quarry-bench-load-{uuid.uuid4().hex[:8]}:")
    database_url: str | None = None
    bases: list[str] = field(default_factory=list)
    llm_url: str = ""
    procs: Procs = field(init=False)
    private: PrivatePostgres | None = None

    def __post_init__(self) -> None:
        self.procs = Procs(self.logs)

    @property
    def database(self) -> str:
        from sqlalchemy import make_url

        assert self.database_url is not None
        return str(make_url(self.database_url).database)

    def env(self, key: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("QUARRY_", "LLM_", "OPENAI_", "SANDBOX_", "DB_", "REDIS_"))
            and k not in ("DATABASE_URL", "DATA_DIR", "JWT_SECRET_KEY", "PYTHONPATH")
        }
        assert self.database_url is not None
        env.update(
            DATABASE_URL=self.database_url,
            DATA_DIR=str(self.work / "data"),
            JWT_SECRET_KEY=key,
            REDIS_URL=self.redis_url,
            REDIS_PREFIX=self.prefix,
            LOG_LEVEL="INFO",
            LOG_JSON="true",
            PYTHONPATH=str(self.source),
            PYTHONUNBUFFERED="1",
            # the LLM: a FAKE OpenAI-compatible endpoint on loopback, through langchain-openai
            OPENAI_BASE_URL=f"{self.llm_url}/v1",
            OPENAI_API_KEY="fake-bench-key",
            LLM_MODEL="fake-1-3s",
            SANDBOX_BACKEND="process",
            WORKER_METRICS_PORT="0",
            # every simulated user comes from 127.0.0.1: a per-address limit meant for
            # strangers on the internet would stop the 21st registration
            REGISTER_MAX_PER_IP_PER_HOUR="1000000",
        )
        env.update(self.extra_env)
        return env

    def connections_needed(self) -> int:
        """OPERATIONS.md's sizing: API processes x 41 (two pools of 10 + 10, and a LISTEN)
        + worker processes x 3, plus the workers' heartbeats and this benchmark's own."""
        return self.apis * 41 + self.workers * self.concurrency * 3 + self.workers * 2 + 10

    def start(self) -> None:
        need = self.connections_needed()
        mode = self.postgres
        if mode == "auto":
            most, used = connection_room(self.admin_url)
            mode = "shared" if most - used >= need else "private"
            if mode == "private" and not PrivatePostgres.available():
                mode = "shared"  # and expect "too many clients" (the report will say)
            self.pg_note = (
                f"the shared server has {most - used} of {most} connections free, the "
                f"stack may open {need}"
            )
        if mode == "private":
            if not PrivatePostgres.available():
                raise RuntimeError("a private PostgreSQL needs root and the postgres binaries")
            self.private = PrivatePostgres(self.procs, max_connections=need + 20)
            self.private.start()
            self.admin_url = self.private.url
            self.pg_note = f"a private PostgreSQL 15 (max_connections {need + 20}): " + (
                self.pg_note or "asked for"
            )
        else:
            self.pg_note = "the machine's shared PostgreSQL" + (
                f" ({self.pg_note})" if self.pg_note else ""
            )
        self.database_url = create_database(self.admin_url, "quarry_bench_load")
        key = secrets.token_urlsafe(48)

        port = _free_port()
        self.llm_url = f"http://127.0.0.1:{port}"
        command_line = [
            sys.executable, "-m", "tests.bench.fake_llm", "--port", str(port),
            "--min-s", str(self.llm_min_s), "--max-s", str(self.llm_max_s),
        ]  # fmt: skip
        llm = self.procs.spawn(
            "fake-llm", command_line, {**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT
        )
        wait_http(f"{self.llm_url}/stats", llm, 30, self.logs / "fake-llm.log")

        env = self.env(key)
        # DATA_DIR exists before anything starts, as compose's volume does (a worker with
        # --beat started before anyone created it loses its beat process: see the report)
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        # as compose does: a one-shot `python -m api.prestart` (waits, migrates)
        migrate = subprocess.run(
            [sys.executable, "-m", "api.prestart"],
            cwd=self.source,
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed: {migrate.stderr.decode()[-2000:]}")
        for i in range(self.workers):
            command_line = [
                sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                "-Q", "analysis,datasets,maintenance", "--concurrency", str(self.concurrency),
                "--without-gossip", "-l", "INFO", "-n", f"load{i}-{uuid.uuid4().hex[:6]}@%h",
            ]  # fmt: skip
            if i == 0:
                command_line.append("--beat")
            wenv = {
                **env,
                # uid blocks of their own per worker (20 blocks of 50 uids from each base)
                "SANDBOX_UID_BASE": str(65000 + 1000 * i),
            }
            self.procs.spawn(f"worker-{i}", command_line, wenv, cwd=self.source)
        apis = []
        for i in range(self.apis):
            port = _free_port()
            command_line = [
                sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--proxy-headers",
            ]  # fmt: skip
            apis.append(self.procs.spawn(f"api-{i}", command_line, env, cwd=self.source))
            self.bases.append(f"http://127.0.0.1:{port}")
        for i, (base, proc) in enumerate(zip(self.bases, apis, strict=True)):
            wait_http(f"{base}/healthz", proc, 90, self.logs / f"api-{i}.log")

    def pids(self, role: str) -> list[int]:
        return [p.popen.pid for p in self.procs.items if p.name.startswith(role)]

    def snapshot_args(self, pss: bool, ports: list[int] | None = None) -> dict[str, Any]:
        """What `snapshot` needs (plain data: it runs in another process)."""
        return {
            "items": [(p.name, p.popen.pid) for p in self.procs.items],
            "database": self.database if self.database_url is not None else None,
            "pss": pss,
            "me": os.getpid(),
            "ports": ports,
        }

    def close(self) -> dict[str, Any]:
        done: dict[str, Any] = {"stopped": self.procs.close(keep=("postgres",))}
        if self.database_url is not None:
            with contextlib.suppress(Exception):
                database = self.database
                drop_database(self.admin_url, self.database_url)
                done["database dropped"] = database
            self.database_url = None
        self.procs.close()  # the private PostgreSQL, if any, last
        if self.private is not None:
            self.private.close()
            done["private PostgreSQL removed"] = str(self.private.folder)
            self.private = None
        with contextlib.suppress(Exception):
            done["redis keys deleted"] = delete_redis_prefix(self.redis_url, self.prefix)
        return done
