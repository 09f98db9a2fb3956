"""Load benchmark: `make bench-load` (BENCH_LOAD_ARGS='--quick' for a ~2-minute smoke run).

The compose topology on this machine, under many simulated people:
- a fresh PostgreSQL database (migrated by `python -m api.prestart`), Redis (a key prefix
  of its own);
- 2 API processes: `uvicorn api.main:app`, each its own process on its own port (two
  replicas, as compose or the chart scale the API; one port with `--workers 2` would let
  the kernel pick a process per connection and hide which one stalls). Clients spread
  their requests over both, round robin per request, as a load balancer does;
- 2 Celery workers `celery -A worker.celery_app worker -Q analysis,datasets,maintenance
  --concurrency N` (prefork; the first with `--beat`), the process sandbox;
- a FAKE LLM: an OpenAI-compatible HTTP server on loopback (tests/bench/fake_llm.py)
  that the workers reach through OPENAI_BASE_URL/OPENAI_API_KEY with langchain-openai,
  the product's real provider path (its HTTP client and pool, tool-call JSON, usage and
  cost), not a model object swapped in through LLM_FACTORY. It takes 1-3 s per call
  (uniformly random). Each turn: the model asks for one `run_python` call over the
  session's dataset (a real sandbox run), then answers: two calls, 2-6 s.

The people: U users (default 500), each registered, signed in, with one uploaded CSV and
one session, asking a question every 30-90 s (uniformly random; the first within the first
minute) and reading the answer's event stream to `done`. A user whose answer takes longer
than the pause asks again right after it (nobody types while the answer is coming). F
SSE followers (default 200): more browser tabs of the users (follower j serves users
j, j+F, ...), each holding `GET /api/runs/{id}/events` open on their newest run, following
it to `done`, then the next. Before the load, one user asks alone (the single-user
baseline); after the warm-up (each worker process's first turn opens its sandbox pool).

It prints errors by kind, latency from the 202 to the first event and to `done` (alone and
under load), turns per minute, queue depth over time, /healthz latency (probed from a
process of its own, every second, on each API), open streams, memory of every process at
start and end, and the load generator's own CPU. Results: bench-results/load[-LABEL].json.
It asserts nothing.

    python -m tests.bench.bench_load [--users 500] [--followers 200] [--duration 10]
        [--concurrency N] [--quick] [--git-rev REV] [--logs DIR]

`--git-rev REV` runs the product as it was at REV (exported with `git archive` into the
run's temporary folder) with this benchmark: a before/after comparison of a fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.bench.bench_turn import _dataset_csv
from tests.bench.clients import (
    Balancer,
    Client,
    Errors,
    Follow,
    Streams,
    dist,
    fmt,
    mark,
    pct,
    scan_log,
)
from tests.bench.stack import ROOT, LoadStack, snapshot

QUESTION = "What is the average income by education?"
QUEUES = ("analysis", "datasets", "maintenance")


# --- /healthz, probed from a process of its own -----------------------------------------------


def probe(bases: list[str], every_s: float, out: str, stop: Any) -> None:
    """GET /healthz on each API every `every_s`, one connection each; JSON lines to `out`:
    [seconds since start, api, milliseconds or null, error]. Runs until `stop` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    clients = [httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0)) for _ in bases]
    started = time.monotonic()
    with open(out, "w") as sink:
        while not stop.is_set():
            tick = time.monotonic()
            for i, (base, client) in enumerate(zip(bases, clients, strict=True)):
                sent = time.perf_counter()
                try:
                    code = client.get(f"{base}/healthz").status_code
                    ms: float | None = (time.perf_counter() - sent) * 1000
                    error = "" if code == 200 else f"HTTP {code}"
                except httpx.HTTPError as exc:
                    ms, error = None, type(exc).__name__
                sink.write(json.dumps([round(tick - started, 2), i, ms, error]) + "\n")
            sink.flush()
            stop.wait(max(0.0, every_s - (time.monotonic() - tick)))
    for client in clients:
        client.close()


# --- the simulated people ----------------------------------------------------------------------


@dataclass
class Turn:
    user: int
    at: float  # seconds from the start of the load when asked
    late_s: float = 0.0  # asked this long after its planned time (the previous answer ran over)
    post_ms: float | None = None
    post: str = ""  # "202", "HTTP 429", "ReadTimeout"...
    run_id: str = ""
    first_s: float | None = None
    first_type: str = ""
    done_s: float | None = None
    status: str = ""  # succeeded / failed / cancelled / timeout / stopped / rejected
    error: str = ""
    reconnects: int = 0
    ended_at: float | None = None  # seconds from the start of the load


@dataclass
class Followed:
    follower: int
    user: int
    lag_s: float  # from the 202 to this follower opening its stream
    first_s: float | None
    done_s: float | None
    status: str
    reconnects: int


@dataclass
class Person:
    index: int
    client: Client
    session_id: str = ""
    dataset_id: str = ""
    runs: asyncio.Queue[tuple[str, float]] | None = None  # -> its follower


@dataclass
class Sample:
    t: float
    queues: dict[str, int] = field(default_factory=dict)
    unacked: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    pg_conns: int = 0  # connections to this database
    pg_conns_all: int = 0  # to the whole server (max_connections counts these)
    pg_by_role: dict[str, int] | None = None  # who holds this database's connections
    streams_user: int = 0
    streams_follower: int = 0
    in_flight: int = 0
    done_in_interval: int = 0
    cpu_pct: float = 0.0  # the load generator, % of one core over the interval
    loop_lag_ms: float = 0.0  # its event loop's worst lag over the interval
    worker_rss_mb: float | None = None
    api_rss_mb: float | None = None
    loadavg: float = 0.0  # the machine's 1-minute load average


class Load:
    def __init__(self, args: argparse.Namespace, stack: LoadStack) -> None:
        self.args = args
        self.stack = stack
        self.balancer = Balancer(stack.bases)
        self.errors = Errors()  # during the measured load
        self.setup_errors = Errors()
        self.streams = Streams()
        self.stop = asyncio.Event()  # everything stops reading now
        self.people: list[Person] = []
        self.turns: list[Turn] = []
        self.followed: list[Followed] = []
        self.samples: list[Sample] = []
        self.in_flight = 0
        self.t0 = 0.0
        self.lag_max = 0.0
        self.results: dict[str, Any] = {}
        self.load_over = False
        self.user_busy: dict[int, bool] = {}
        self.tick = time.monotonic()
        self.stalls: Counter[str] = Counter()  # where the event loop was when stalled
        # one connection of its own, opened before the load: it still answers when the
        # server has no connection left for anyone else
        from sqlalchemy import create_engine

        assert stack.database_url is not None
        self.engine = create_engine(
            stack.database_url, pool_size=1, max_overflow=0, pool_pre_ping=True
        )
        with self.engine.connect():
            pass
        # /proc reading (memory, CPU) happens here, away from the event loop's GIL
        self.helper = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def client(self, errors: Errors) -> Client:
        return Client(self.balancer, errors, self.streams, read_timeout_s=self.args.read_timeout)

    # setup ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        tag = f"{os.getpid()}-{int(time.time())}"
        content = _dataset_csv(self.args.rows)
        gate = asyncio.Semaphore(self.args.setup_concurrency)
        sign_up: list[float] = []
        uploads: list[float] = []

        async def one(i: int) -> Person | None:
            async with gate:
                person = Person(i, self.client(self.setup_errors))
                started = time.monotonic()
                if not await person.client.sign_up(f"load-{tag}-{i}@example.com"):
                    await person.client.aclose()
                    return None
                sign_up.append(time.monotonic() - started)
                dataset_id, took = await person.client.upload(f"census-{i}.csv", content)
                if dataset_id is None:
                    await person.client.aclose()
                    return None
                uploads.append(took)
                session_id = await person.client.session(dataset_id, f"load {i}")
                if session_id is None:
                    await person.client.aclose()
                    return None
                person.dataset_id, person.session_id = dataset_id, session_id
                person.client.errors = self.errors  # from now on, errors are the load's
                return person

        started = time.monotonic()
        done = await asyncio.gather(*(one(i) for i in range(self.args.users)))
        self.people = [p for p in done if p is not None]
        self.results["setup"] = {
            "users_asked": self.args.users,
            "users_ready": len(self.people),
            "seconds": round(time.monotonic() - started, 1),
            "register_and_login_s": dist(sign_up),
            "upload_to_ready_s": dist(uploads),
            "errors": self.setup_errors.as_dict(),
        }

    # one question ----------------------------------------------------------------------------

    async def ask(self, person: Person, turn: Turn, who: str, deadline_s: float) -> None:
        client = person.client
        self.in_flight += 1
        try:
            for attempt in (1, 2):
                _, base = self.balancer.pick()
                headers = client.headers
                sent = time.monotonic()
                try:
                    response = await client.http.post(
                        f"{base}/api/sessions/{person.session_id}/messages",
                        json={"content": QUESTION},
                        headers=headers,
                    )
                except httpx.HTTPError as exc:
                    turn.post, turn.status = type(exc).__name__, "rejected"
                    client.errors.add(f"POST /messages: {type(exc).__name__}", str(exc))
                    return
                # an expired access token: renewed with the refresh token, then again
                if response.status_code != 401 or attempt == 2:
                    break
                if not await client.renew(headers):
                    break
            accepted = time.monotonic()
            turn.post_ms = (accepted - sent) * 1000
            turn.post = str(response.status_code)
            if response.status_code != 202:
                turn.status = "rejected"
                client.errors.add(f"POST /messages: HTTP {response.status_code}", response.text)
                return
            turn.run_id = str(response.json()["run_id"])
            if person.runs is not None:
                person.runs.put_nowait((turn.run_id, accepted))
            f = await client.follow(turn.run_id, accepted, accepted + deadline_s, who, self.stop)
            turn.first_s, turn.first_type, turn.done_s = f.first_s, f.first_type, f.done_s
            turn.status, turn.error, turn.reconnects = f.status, f.error, f.reconnects
            if f.status == "failed":
                client.errors.add("run failed", f.error)
            elif f.status == "cancelled":
                client.errors.add("run cancelled", f.error)
            elif f.status not in ("succeeded", "timeout", "stopped"):
                client.errors.add(f"run ended {f.status}", f.error)
        finally:
            self.in_flight -= 1
            turn.ended_at = time.monotonic() - self.t0 if self.t0 else None

    # phases --------------------------------------------------------------------------------

    async def warm_up(self) -> list[Turn]:
        """Every worker process opens its database pools and its sandbox pool on its first
        turn: as many concurrent turns as there are worker processes, twice."""
        slots = self.stack.workers * self.stack.concurrency
        turns: list[Turn] = []
        warm_errors = Errors()
        for _round in range(2):
            batch = [Turn(user=p.index, at=0.0) for p in self.people[:slots]]
            saved = [p.client.errors for p in self.people[:slots]]
            for p in self.people[:slots]:
                p.client.errors = warm_errors
            await asyncio.gather(
                *(
                    self.ask(p, t, "warm-up", self.args.turn_timeout)
                    for p, t in zip(self.people[:slots], batch, strict=True)
                )
            )
            for p, e in zip(self.people[:slots], saved, strict=True):
                p.client.errors = e
            turns += batch
        self.results["warm_up"] = {
            "turns": len(turns),
            "done_s": dist([t.done_s for t in turns if t.done_s is not None]),
            "statuses": dict(Counter(t.status for t in turns)),
            "errors": warm_errors.as_dict(),
        }
        return turns

    async def baseline(self) -> list[Turn]:
        """One user asking alone, one question after another (1 s apart)."""
        person = self.people[-1]
        alone = Errors()
        saved, person.client.errors = person.client.errors, alone
        turns = []
        for _ in range(self.args.baseline_turns):
            turn = Turn(user=person.index, at=0.0)
            await self.ask(person, turn, "baseline", self.args.turn_timeout)
            turns.append(turn)
            await asyncio.sleep(1.0)
        person.client.errors = saved
        self.results["baseline_errors"] = alone.as_dict()
        return turns

    async def user_loop(self, person: Person, end: float) -> None:
        rng = random.Random(self.args.seed * 100_003 + person.index)
        planned = self.t0 + rng.uniform(0, min(60.0, self.args.duration * 60))
        while planned < end and not self.stop.is_set():
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            now = time.monotonic()
            turn = Turn(user=person.index, at=now - self.t0, late_s=max(0.0, now - planned))
            self.turns.append(turn)
            await self.ask(person, turn, "user", self.args.turn_timeout)
            planned += rng.uniform(self.args.min_pause, self.args.max_pause)
            planned = max(planned, time.monotonic())

    async def follower_loop(self, index: int, queue: asyncio.Queue[tuple[str, float, int]]) -> None:
        client = self.client(self.errors)
        owners = {p.index: p for p in self.people if p.index % self.args.followers == index}
        try:
            while not self.stop.is_set():
                try:
                    run_id, accepted, owner = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    if self.load_over and queue.empty() and not self.any_user_running(owners):
                        return
                    continue
                client.signed_in_as(owners[owner].client)
                lag = time.monotonic() - accepted
                f: Follow = await client.follow(
                    run_id, accepted, accepted + self.args.turn_timeout, "follower", self.stop
                )
                self.followed.append(
                    Followed(index, owner, lag, f.first_s, f.done_s, f.status, f.reconnects)
                )
        finally:
            await client.aclose()

    def any_user_running(self, owners: dict[int, Person]) -> bool:
        return any(self.user_busy.get(i, False) for i in owners)

    async def sampler(self, every_s: float) -> None:
        import redis
        from sqlalchemy import text

        r = redis.Redis.from_url(self.stack.redis_url)
        engine = self.engine
        cpu = time.process_time()
        wall = time.monotonic()
        done_before = 0
        rss_every = max(1, round(30 / every_s))
        n = 0

        def read(s: Sample, with_roles: bool) -> list[int] | None:
            prefix = self.stack.prefix + "celery:"
            s.queues = {q: int(r.llen(prefix + q)) for q in QUEUES}
            s.unacked = int(r.hlen(prefix + "unacked"))
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, count(*) FROM runs GROUP BY status"))
                s.runs = {str(status): int(c) for status, c in rows}
                s.pg_conns_all, s.pg_conns = conn.execute(
                    text(
                        "SELECT count(*), count(*) FILTER (WHERE datname = current_database()) "
                        "FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    )
                ).one()
                if not with_roles:
                    return None
                return list(
                    conn.execute(
                        text(
                            "SELECT client_port FROM pg_stat_activity "
                            "WHERE datname = current_database() AND client_port IS NOT NULL"
                        )
                    ).scalars()
                )

        try:
            while True:
                await asyncio.sleep(every_s)
                now = time.monotonic()
                s = Sample(t=round(now - self.t0, 1))
                ports = None
                try:
                    ports = await asyncio.to_thread(read, s, n % rss_every == 0)
                except Exception as exc:
                    self.errors.add("sampler (bench side)", repr(exc))
                c = time.process_time()
                s.cpu_pct = round(100 * (c - cpu) / max(1e-6, now - wall), 1)
                cpu, wall = c, now
                s.loop_lag_ms, self.lag_max = round(self.lag_max * 1000, 1), 0.0
                s.streams_user = self.streams.open["user"]
                s.streams_follower = self.streams.open["follower"]
                s.in_flight = self.in_flight
                s.loadavg = round(os.getloadavg()[0], 1)
                finished = sum(1 for t in self.turns if t.done_s is not None)
                s.done_in_interval, done_before = finished - done_before, finished
                if n % rss_every == 0:
                    snap = await self.snapshot(False, ports)
                    mem = snap["memory"]
                    s.worker_rss_mb = round(_worker_total(mem, "rss_mb"), 1)
                    s.api_rss_mb = round(
                        sum(v["rss_mb"] for k, v in mem.items() if k.startswith("api")), 1
                    )
                    s.pg_by_role = snap["pg_by_role"]
                n += 1
                self.samples.append(s)
        finally:
            r.close()

    async def snapshot(self, pss: bool, ports: list[int] | None = None) -> dict[str, Any]:
        """Memory, CPU and connection owners of the stack, read in the helper process."""
        loop = asyncio.get_running_loop()
        call = functools.partial(snapshot, **self.stack.snapshot_args(pss, ports))
        snap: dict[str, Any] = await loop.run_in_executor(self.helper, call)
        self.stack.procs.seen.update({int(k): v for k, v in snap["seen"].items()})
        return snap

    async def lag_monitor(self) -> None:
        self.tick = time.monotonic()
        watchdog = threading.Thread(target=self.watchdog, daemon=True)
        watchdog.start()
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            self.tick = time.monotonic()
            self.lag_max = max(self.lag_max, self.tick - before - 0.1)

    def watchdog(self) -> None:
        """Where the event loop's thread is when it has not ticked for 0.5 s: the report's
        evidence of what stalls the load generator (if anything does)."""
        main = threading.main_thread().ident
        while not self.stop.is_set():
            time.sleep(0.25)
            if time.monotonic() - self.tick < 0.5:
                continue
            frame = sys._current_frames().get(main or 0)
            where = []
            while frame is not None and len(where) < 4:
                code = frame.f_code
                where.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            self.stalls[" < ".join(where)] += 1

    async def load(self) -> float:
        args = self.args
        queues: list[asyncio.Queue[tuple[str, float, int]]] = [
            asyncio.Queue() for _ in range(args.followers)
        ]
        for p in self.people:
            if args.followers:
                p.runs = _Tagged(queues[p.index % args.followers], p.index)  # type: ignore[assignment]
        self.machine_cpu = _machine_busy_s()
        self.pg_before = await asyncio.to_thread(pg_counters, self.engine)
        self.t0 = time.monotonic()
        end = self.t0 + args.duration * 60
        helpers = [
            asyncio.create_task(self.sampler(args.sample_every)),
            asyncio.create_task(self.lag_monitor()),
        ]

        async def user(p: Person) -> None:
            self.user_busy[p.index] = True
            try:
                await self.user_loop(p, end)
            finally:
                self.user_busy[p.index] = False

        users = [asyncio.create_task(user(p)) for p in self.people]
        followers = [asyncio.create_task(self.follower_loop(i, q)) for i, q in enumerate(queues)]
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        self.load_over = True
        print("load over; waiting for answers in flight", file=sys.stderr)
        # users ask nothing more; what is in flight may finish (each turn has a deadline)
        drained = await asyncio.wait(users + followers, timeout=args.turn_timeout + 15)
        self.stop.set()
        for task in drained[1]:
            task.cancel()
        await asyncio.gather(*users, *followers, return_exceptions=True)
        elapsed = time.monotonic() - self.t0
        self.machine_cpu = _machine_busy_s() - self.machine_cpu
        after = await asyncio.to_thread(pg_counters, self.engine)
        self.pg_during = {k: after[k] - self.pg_before[k] for k in after}
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        return elapsed

    async def close(self) -> None:
        await asyncio.gather(*(p.client.aclose() for p in self.people), return_exceptions=True)
        self.engine.dispose()
        self.helper.shutdown(wait=True, cancel_futures=True)


class _Tagged:
    """A follower's queue as one user sees it: puts carry the user's index."""

    def __init__(self, queue: asyncio.Queue[tuple[str, float, int]], index: int) -> None:
        self.queue, self.index = queue, index

    def put_nowait(self, item: tuple[str, float]) -> None:
        self.queue.put_nowait((*item, self.index))


def _machine_busy_s() -> float:
    """CPU seconds every process of this machine has used so far (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def pg_counters(engine: Any) -> dict[str, int]:
    """PostgreSQL's counters for this database: transactions, rows, and sessions (each new
    connection is one: a pool that keeps closing and opening connections shows here)."""
    from sqlalchemy import text

    names = ("transactions", "rows_returned", "rows_fetched", "rows_written", "sessions")
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT xact_commit + xact_rollback, tup_returned, tup_fetched, "
                "tup_inserted + tup_updated + tup_deleted, sessions "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
    return dict(zip(names, map(int, row), strict=True))


def _worker_total(mem: dict[str, Any], key: str) -> float:
    return sum(
        part[key]
        for name, parts in mem.items()
        if name.startswith("worker")
        for part in parts.values()
    )


# --- the report --------------------------------------------------------------------------------


def _series(values: list[tuple[float, str]], width: int = 100) -> list[str]:
    """`t=value` items wrapped into lines."""
    lines, line = [], ""
    for t, v in values:
        item = f"{t:>5.0f}s:{v}"
        if len(line) + len(item) + 2 > width:
            lines.append(line)
            line = ""
        line += ("  " if line else "") + item
    if line:
        lines.append(line)
    return lines


def _memory_rows(mem: dict[str, Any]) -> list[tuple[str, int, float, float]]:
    rows = []
    for name, value in mem.items():
        if name.startswith("worker"):
            for part, m in value.items():
                if m["count"]:
                    rows.append((f"{name} {part}", m["count"], m["rss_mb"], m["pss_mb"]))
            total_rss = sum(m["rss_mb"] for m in value.values())
            total_pss = sum(m["pss_mb"] for m in value.values())
            count = sum(m["count"] for m in value.values())
            rows.append((f"{name} total", count, total_rss, total_pss))
        else:
            rows.append((name, value["count"], value["rss_mb"], value["pss_mb"]))
    return rows


def report(
    load: Load,
    elapsed: float,
    mem_start: dict[str, Any],
    mem_end: dict[str, Any],
    health: list[list[Any]],
    warm: list[Turn],
    alone: list[Turn],
) -> dict[str, Any]:
    args, stack, results = load.args, load.stack, load.results
    turns = load.turns
    slots = stack.workers * stack.concurrency
    print(
        f"\nQuarry load benchmark — {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
        + (f"; product at {args.git_rev}" if args.git_rev else "")
        + (f"; settings {stack.extra_env}" if stack.extra_env else "")
    )
    print(
        f"  {stack.apis} API processes (uvicorn api.main:app, one port each; requests round "
        f"robin), {stack.workers} Celery workers x --concurrency {stack.concurrency} "
        f"(prefork, {slots} turn slots; worker-0 with --beat), process sandbox, PostgreSQL, "
        "Redis"
    )
    print(f"  PostgreSQL: {stack.pg_note}")
    print(
        f"  LLM: FAKE (OpenAI-compatible HTTP on loopback, via langchain-openai), "
        f"{stack.llm_min_s:g}–{stack.llm_max_s:g} s per call (uniform); 2 calls per turn "  # noqa: RUF001
        "(one run_python tool call, then the answer)"
    )
    setup = results["setup"]
    print(
        f"  users: {len(load.people)} ready of {args.users} (register, login, one "
        f"{args.rows}-row CSV, one session; setup {setup['seconds']:.0f} s), a question every "
        f"{args.min_pause:g}-{args.max_pause:g} s; SSE followers: {args.followers}; load "
        f"{args.duration:g} min (then {elapsed - args.duration * 60:.0f} s for answers in "
        "flight)"
    )
    offered = len(load.people) / ((args.min_pause + args.max_pause) / 2)
    print(
        f"  offered: ~{offered:.1f} questions/s; needs ~{offered * 4.2:.0f} busy turn slots "
        f"at ~4.2 s a turn (have {slots})"
    )

    # turns
    by_status = Counter(t.status for t in turns)
    done = [t for t in turns if t.done_s is not None]
    print("\nTurns (users' own streams)")
    print(
        f"  asked {len(turns)}, accepted {sum(1 for t in turns if t.post == '202')}, "
        + ", ".join(f"{k or '?'} {v}" for k, v in by_status.most_common())
    )
    late = [t.late_s for t in turns if t.late_s > 1]
    print(
        f"  asked late (the previous answer outlasted the pause): {len(late)}"
        + (f", by p50 {statistics.median(late):.0f} s, max {max(late):.0f} s" if late else "")
    )
    renewals = sum(p.client.renewals for p in load.people)
    print(f"  access tokens renewed with the refresh token (after a 401): {renewals}")
    load.errors.print("Errors during the load, by kind (target 0)")
    if load.setup_errors.total():
        load.setup_errors.print("Errors during setup")

    # latency
    print("\nLatency from the 202 (s)            n      p50      p95      max")
    rows: dict[str, list[float]] = {
        "single user alone: first event": [t.first_s for t in alone if t.first_s is not None],
        "single user alone: done": [t.done_s for t in alone if t.done_s is not None],
        "under load: first event": [t.first_s for t in done if t.first_s is not None],
        "under load: done": [t.done_s for t in done],
        "followers (opened <1 s after): done": [
            f.done_s for f in load.followed if f.done_s is not None and f.lag_s < 1
        ],
        "POST /messages round trip (ms)": [t.post_ms for t in turns if t.post_ms is not None],
    }
    for label, values in rows.items():
        p50 = fmt(statistics.median(values) if values else None)
        top = fmt(max(values) if values else None)
        print(f"  {label:<36} {len(values):>5} {p50:>8} {fmt(pct(values, 95)):>8} {top:>8}")
    alone_p95 = pct(rows["single user alone: done"], 95)
    load_p95 = pct(rows["under load: done"], 95)
    ratio = load_p95 / alone_p95 if alone_p95 == alone_p95 and alone_p95 else float("nan")
    print(
        f"  p95 to done under load / alone: {fmt(ratio)}x (target <= 3x) "
        f"{mark(ratio <= 3) if ratio == ratio else '✗ (no data)'}"
    )
    first_types = Counter(t.first_type for t in done)
    print(f"  first event types: {dict(first_types)}")
    if warm:
        wd = [t.done_s for t in warm if t.done_s is not None]
        print(
            f"  warm-up ({len(warm)} turns, 2 rounds of {slots}): done p50 "
            f"{fmt(statistics.median(wd) if wd else None)} s, max {fmt(max(wd) if wd else None)} s"
        )

    # throughput
    minutes = max(1, int(elapsed // 60) + 1)
    per_minute = [0] * minutes
    for t in done:
        if t.ended_at is not None:
            per_minute[min(minutes - 1, int(t.ended_at // 60))] += 1
    asked_per_minute = [0] * minutes
    for t in turns:
        asked_per_minute[min(minutes - 1, int(t.at // 60))] += 1
    full = [n for i, n in enumerate(per_minute) if i < int(args.duration)]
    print("\nThroughput (turns completed per minute; asked per minute)")
    print(f"  completed: {per_minute}")
    print(f"  asked:     {asked_per_minute}")
    if full:
        print(
            f"  mean over the {len(full)} full load minutes: {statistics.fmean(full):.0f}/min "
            f"({statistics.fmean(full) / 60:.2f}/s)"
        )

    # queue depth and streams
    samples = load.samples
    print(
        f"\nQueue depth every {args.sample_every:g} s: Redis LLEN analysis (+datasets,"
        " maintenance when not 0), unacked (reserved by workers); runs queued/running in "
        "the database"
    )
    series = []
    for s in samples:
        extra = "".join(f"+{s.queues.get(q, 0)}{q[0]}" for q in QUEUES[1:] if s.queues.get(q))
        series.append(
            (
                s.t,
                f"{s.queues.get('analysis', 0)}{extra}/{s.unacked}"
                f"|{s.runs.get('queued', 0)}q{s.runs.get('running', 0)}r",
            )
        )
    for line in _series(series):
        print("  " + line)
    depth = [s.queues.get("analysis", 0) for s in samples]
    during = [s for s in samples if s.t <= args.duration * 60] or samples
    queued_db = [s.runs.get("queued", 0) for s in during]
    if samples:
        third = max(1, len(queued_db) // 3)
        a = statistics.fmean(queued_db[:third])
        b = statistics.fmean(queued_db[-third:])
        rate = statistics.fmean(full) / 60 if full else 0.0
        keeps_up = max(queued_db) <= slots and b <= max(5.0, 2 * a)
        accepted = sum(1 for t in turns if t.post == "202")
        if turns and accepted < 0.9 * len(turns):
            verdict = (
                f"the API turned away {100 * (1 - accepted / len(turns)):.0f}% of the "
                "questions (see the errors): the workers were not what limited the load"
            )
        elif keeps_up:
            verdict = "the workers keep up"
        else:
            verdict = (
                f"the workers DO NOT keep up: {rate:.2f} turns/s done against "
                f"~{offered:.2f}/s offered; a question waits ~{b / rate if rate else 0:.0f} s "
                "for a worker"
            )
        print(
            f"  runs queued in the database during the load: max {max(queued_db)}, mean of the "
            f"first third {a:.1f}, of the last third {b:.1f} -> {verdict}"
        )
        print(f"  Redis LLEN analysis: max {max(depth)}")
        pg, pg_all = [s.pg_conns for s in samples], [s.pg_conns_all for s in samples]
        print(
            f"  PostgreSQL client connections: to this database max {max(pg)}, to the server "
            f"max {max(pg_all)} (max_connections "
            f"{results.get('runs_at_end', {}).get('max_connections')})"
        )
        print(
            "  "
            + "  ".join(f"{s.t:.0f}s:{s.pg_conns}" for s in samples[:: max(1, len(samples) // 12)])
        )
    print("\nOpen event streams (users' own + followers) over time")
    for line in _series([(s.t, f"{s.streams_user}+{s.streams_follower}") for s in samples]):
        print("  " + line)
    if samples:
        tot = [s.streams_user + s.streams_follower for s in samples]
        print(f"  max {max(tot)} at once; streams opened: {dict(load.streams.opened)}")

    # health
    print("\n/healthz latency (ms), probed every second on each API (target p95 < 50 ms)")
    health_out: dict[str, Any] = {}
    for i in range(stack.apis):
        ok = [row[2] for row in health if row[1] == i and row[2] is not None]
        failed = [row for row in health if row[1] == i and (row[2] is None or row[3])]
        d = dist(ok)
        over = sum(1 for v in ok if v > 50)
        print(
            f"  api-{i}: n {len(ok) + len(failed)}, p50 {fmt(d.get('p50'), 1)}, p95 "
            f"{fmt(d.get('p95'), 1)}, max {fmt(d.get('max'), 1)}, over 50 ms {over}, failed "
            f"{len(failed)}"
            + (f" ({Counter(r[3] for r in failed).most_common(3)})" if failed else "")
            + f"  {mark(bool(ok) and d['p95'] < 50 and not failed)}"
        )
        slow = [
            f"{row[0]:.0f}s:" + (f"{row[2]:.0f}" if row[2] is not None else row[3])
            for row in health
            if row[1] == i and (row[2] is None or row[2] > 50)
        ]
        if slow:
            more = " ..." if len(slow) > 12 else ""
            print("    slow or failed probes (t: ms): " + ", ".join(slow[:12]) + more)
        health_out[f"api-{i}"] = {**d, "failed": len(failed), "over_50ms": over}

    # memory
    print("\nMemory (MB): RSS counts shared pages in every process; PSS shares them out")
    heads = " ".join(f"{h:>10}" for h in ("RSS start", "RSS end", "PSS start", "PSS end"))
    print(f"  {'process':<28} {'n':>4} {heads}")
    start_rows = {r[0]: r for r in _memory_rows(mem_start)}
    for name, count, rss, pss in _memory_rows(mem_end):
        s = start_rows.get(name, (name, 0, float("nan"), float("nan")))
        print(f"  {name:<28} {count:>4} {s[2]:>10.0f} {rss:>10.0f} {s[3]:>10.0f} {pss:>10.0f}")
    cpu_load = results.get("cpu_s_during_load", {})
    if cpu_load:
        names = [p.name for p in stack.procs.items]
        top = {k: v for k, v in cpu_load.items() if k in names}
        busy = sum(top.values())
        print(
            f"  CPU seconds during the load ({elapsed:.0f} s x {os.cpu_count()} CPUs = "
            f"{elapsed * (os.cpu_count() or 1):.0f} available): "
            + ", ".join(f"{k} {v:.0f}" for k, v in top.items())
            + f", load generator {cpu_load.get('load generator', 0):.0f}"
        )
        if done:
            per_turn = {k: 1000 * v / len(done) for k, v in top.items()}
            print(
                f"  per completed turn: {1000 * busy / len(done):.0f} ms of the stack's CPU ("
                + ", ".join(f"{k} {v:.0f}" for k, v in per_turn.items())
                + ")"
            )
            parts = {
                k: 1000 * v / len(done)
                for k, v in cpu_load.items()
                if k.startswith("worker") and " " in k and v > 0
            }
            print(
                "    workers by part (ms per turn; zygotes include the sandboxes they "
                "reaped): " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items())
            )
        ours = busy + cpu_load.get("load generator", 0)
        machine = load.machine_cpu
        loads = [s.loadavg for s in samples]
        print(
            f"  the whole machine used {machine:.0f} CPU s: this benchmark {ours:.0f}, other "
            f"processes (anyone else on this machine) {max(0.0, machine - ours):.0f}; load "
            f"average during the load: mean {statistics.fmean(loads) if loads else 0:.1f}, "
            f"max {max(loads) if loads else 0:.1f}"
        )
        pgd = getattr(load, "pg_during", {})
        if pgd and done:
            n = len(done)
            print(
                f"  PostgreSQL: {pgd['transactions'] / elapsed:.0f} transactions/s, "
                f"{pgd['transactions'] / n:.0f} per completed turn; rows returned "
                f"{pgd['rows_returned'] / n:.0f}, written {pgd['rows_written'] / n:.0f} per turn;"
                f" new connections (sessions) {pgd['sessions']} ({pgd['sessions'] / elapsed:.1f}/s)"
            )
    rss_series = [(s.t, f"{s.worker_rss_mb:.0f}") for s in samples if s.worker_rss_mb is not None]
    if rss_series:
        print("  workers' total RSS over time (MB):")
        for line in _series(rss_series):
            print("    " + line)

    # the load generator itself
    cpu = [s.cpu_pct for s in samples]
    lag = [s.loop_lag_ms for s in samples]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    mean_cpu = fmt(statistics.fmean(cpu) if cpu else None, 0)
    worst = max(samples, key=lambda s: s.loop_lag_ms) if samples else None
    print(
        f"\nLoad generator (this process): CPU mean {mean_cpu}% of one core, max "
        f"{fmt(max(cpu) if cpu else None, 0)}%; event loop lag p95 {fmt(pct(lag, 95), 0)} ms, "
        f"worst {fmt(worst.loop_lag_ms if worst else None, 0)} ms (in the {args.sample_every:g} s "
        f"before {fmt(worst.t if worst else None, 0)} s); peak RSS {usage.ru_maxrss / 1024:.0f} MB"
        + (
            "  -> not the bottleneck"
            if cpu and max(cpu) < 70 and pct(lag, 95) < 200
            else "  -> CHECK: it may be limiting the load"
        )
    )

    if load.stalls:
        print("  event loop stalls over 0.5 s, where its thread was (quarter-second samples):")
        for where, n in load.stalls.most_common(5):
            print(f"    {n:>5}  {where[:170]}")

    # logs and leftovers
    print(f"\nLogs ({stack.logs}): crash markers and error-level events")
    logs_out: dict[str, Any] = {}
    for path in sorted(stack.logs.glob("*.log")):
        found = scan_log(path)
        logs_out[path.stem] = found
        if found["markers"] or found["errors"]:
            print(f"  {path.name}: markers {found['markers'] or '-'}")
            for event, n in list(found["errors"].items())[:6]:
                print(f"    {n:>6}  {event}")
    llm = results.get("fake_llm", {})
    if llm:
        print(
            f"\nFake LLM: {llm.get('calls')} calls ({llm.get('tool_calls')} tool calls, "
            f"{llm.get('answers')} answers), at most {llm.get('max_in_flight')} at once, sleep "
            f"mean {llm.get('sleep_s', {}).get('mean')} s"
        )
    end_runs = results.get("runs_at_end", {})
    print(f"Runs in the database at the end, by status: {end_runs.get('by_status')}")
    for err, n in end_runs.get("failed_errors", []):
        print(f"  failed: {n} x {err[:150]}")

    results.update(
        {
            "cpus": os.cpu_count(),
            "machine_cpu_s_during_load": round(load.machine_cpu, 1),
            "pg_counters_during_load": getattr(load, "pg_during", {}),
            "git_rev": args.git_rev,
            "apis": stack.apis,
            "api_mode": "separate processes, one port each, round robin per request",
            "workers": stack.workers,
            "concurrency": stack.concurrency,
            "postgres": stack.pg_note,
            "extra_env": stack.extra_env,
            "token_renewals": renewals,
            "llm": f"FAKE OpenAI-compatible HTTP, {stack.llm_min_s}-{stack.llm_max_s} s per call",
            "users": len(load.people),
            "followers": args.followers,
            "duration_min": args.duration,
            "elapsed_s": round(elapsed, 1),
            "turns": {
                "asked": len(turns),
                "by_status": dict(by_status),
                "late": len(late),
            },
            "errors": load.errors.as_dict(),
            "latency_s": {k: dist(v) for k, v in rows.items()},
            "p95_ratio_load_vs_alone": round(ratio, 2) if ratio == ratio else None,
            "completed_per_minute": per_minute,
            "asked_per_minute": asked_per_minute,
            "samples": [asdict(s) for s in samples],
            "healthz_ms": health_out,
            "memory_start": mem_start,
            "memory_end": mem_end,
            "load_generator": {
                "cpu_pct_mean": round(statistics.fmean(cpu), 1) if cpu else None,
                "cpu_pct_max": max(cpu) if cpu else None,
                "loop_lag_ms_max": max(lag) if lag else None,
                "stalls": dict(load.stalls.most_common(20)),
            },
            "logs": logs_out,
            "followed": {
                "count": len(load.followed),
                "statuses": dict(Counter(f.status for f in load.followed)),
                "lag_s": dist([f.lag_s for f in load.followed]),
            },
        }
    )
    return results


# --- main ------------------------------------------------------------------------------------


def runs_at_end(engine: Any) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as conn:
        by_status = dict(
            conn.execute(text("SELECT status, count(*) FROM runs GROUP BY status")).all()
        )
        max_connections = conn.execute(text("SHOW max_connections")).scalar()
        failed = conn.execute(
            text(
                "SELECT left(coalesce(error, ''), 200), count(*) FROM runs "
                "WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
            )
        ).all()
    return {
        "by_status": {str(k): int(v) for k, v in by_status.items()},
        "failed_errors": [(str(e), int(n)) for e, n in failed],
        "max_connections": int(str(max_connections)),
    }


async def run(args: argparse.Namespace, stack: LoadStack, work: Path) -> dict[str, Any]:
    load = Load(args, stack)
    ctx = multiprocessing.get_context("spawn")
    stop_probe = ctx.Event()
    health_file = work / "healthz.jsonl"
    prober = None
    try:
        print(f"setup: {args.users} users (register, login, upload, session)", file=sys.stderr)
        await load.setup()
        if not load.people:
            raise RuntimeError(f"no user could be set up: {load.setup_errors.as_dict()}")
        print("warm-up", file=sys.stderr)
        warm = await load.warm_up() if not args.no_warm_up else []
        print(f"single user alone: {args.baseline_turns} turns", file=sys.stderr)
        alone = await load.baseline()
        start = await load.snapshot(True)
        mem_start = start["memory"]
        prober = ctx.Process(
            target=probe,
            args=(stack.bases, 1.0, str(health_file), stop_probe),
            daemon=True,
        )
        prober.start()
        print(
            f"load: {len(load.people)} users, {args.followers} followers, {args.duration:g} min",
            file=sys.stderr,
        )
        elapsed = await load.load()
        stop_probe.set()
        prober.join(15)
        end = await load.snapshot(True)
        mem_end = end["memory"]
        load.results["cpu_s_during_load"] = {
            k: round(v - start["cpu_s"].get(k, 0.0), 1) for k, v in end["cpu_s"].items()
        }
        try:
            async with httpx.AsyncClient() as c:
                load.results["fake_llm"] = (await c.get(f"{stack.llm_url}/stats")).json()
        except httpx.HTTPError:
            pass
        load.results["runs_at_end"] = await asyncio.to_thread(runs_at_end, load.engine)
        health = [json.loads(line) for line in health_file.read_text().splitlines() if line]
        load.results["exited_during_run"] = stack.procs.exited()
        return report(load, elapsed, mem_start, mem_end, health, warm, alone)
    finally:
        stop_probe.set()
        if prober is not None and prober.is_alive():
            prober.join(5)
            if prober.is_alive():
                prober.kill()
        load.stop.set()
        await load.close()


def export_rev(rev: str, dest: Path) -> Path:
    """The product at `rev`, exported (not checked out: the working tree is untouched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "api", "worker", "runner"],
        cwd=dest,
        check=False,
        capture_output=True,
    )
    return dest


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0, help="minutes of load")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="prefork processes per worker (default 12: 24 turn slots, ~10 GB with their "
        "sandbox pools; --quick: 8)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--min-pause", type=float, default=30.0, help="s between questions")
    parser.add_argument("--max-pause", type=float, default=90.0)
    parser.add_argument("--llm-min", type=float, default=1.0, help="s per fake LLM call")
    parser.add_argument("--llm-max", type=float, default=3.0)
    parser.add_argument("--rows", type=int, default=500, help="rows of each user's CSV")
    parser.add_argument("--baseline-turns", type=int, default=20)
    parser.add_argument("--turn-timeout", type=float, default=300.0, help="s to done per turn")
    parser.add_argument("--read-timeout", type=float, default=45.0, help="s of stream silence")
    parser.add_argument("--setup-concurrency", type=int, default=12)
    parser.add_argument("--sample-every", type=float, default=10.0, help="s between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-warm-up", action="store_true")
    parser.add_argument("--quick", action="store_true", help="~2 minutes, 100 users, 40 followers")
    parser.add_argument("--git-rev", help="run the product as it was at this git revision")
    parser.add_argument(
        "--postgres",
        choices=("auto", "shared", "private"),
        default="auto",
        help="the machine's server (shared), a cluster of our own sized for the stack "
        "(private), or shared when it has room for the stack's connections (auto)",
    )
    parser.add_argument("--label", help="results land in bench-results/load-LABEL.json")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Quarry setting for the API and the workers (repeatable)",
    )
    args = parser.parse_args()
    if args.quick:
        args.users, args.followers, args.duration = 100, 40, 2.0
        args.baseline_turns, args.sample_every = 8, 5.0
        args.concurrency = args.concurrency or 8
    args.concurrency = args.concurrency or 12
    args.followers = min(args.followers, args.users)

    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="quarry-bench-load-"))
    logs = args.logs or work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    source = export_rev(args.git_rev, work / "src") if args.git_rev else ROOT
    stack = LoadStack(
        work=work,
        logs=logs,
        apis=args.apis,
        workers=args.workers,
        concurrency=args.concurrency,
        llm_min_s=args.llm_min,
        llm_max_s=args.llm_max,
        source=source,
        postgres=args.postgres,
        extra_env=dict(item.split("=", 1) for item in args.env),
    )
    results: dict[str, Any] | None = None
    stopped = threading.Event()
    try:
        print(f"starting the stack (logs: {logs})", file=sys.stderr)
        stack.start()
        # the load generator (and its probe) before the stack for the CPU: on a busy
        # machine its own scheduling delays would otherwise count as the platform's
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        results = asyncio.run(run(args, stack, work))
    except KeyboardInterrupt:
        stopped.set()
        print("\ninterrupted; cleaning up", file=sys.stderr)
    except Exception:
        for p in stack.procs.items:
            print(f"--- {p.name} (end of log) ---", file=sys.stderr)
            with contextlib.suppress(OSError):
                print(p.log.read_text(errors="replace")[-2000:], file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleaning
        cleaned = stack.close()
        print(f"cleaned up: {cleaned}")
        if results is not None:
            results["cleanup"] = cleaned
        if args.logs is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(work / "src", ignore_errors=True)
            shutil.rmtree(work / "data", ignore_errors=True)
    if results is None:
        return 130 if stopped.is_set() else 1
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    name = f"load-{args.label}.json" if args.label else "load.json"
    (out / name).write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
