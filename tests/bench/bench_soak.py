"""Soak benchmark: `make bench-soak` (BENCH_SOAK_ARGS='--scale 0.1' for 12 minutes).

Embedded mode for hours, started the way `make demo` starts it: `python scripts/demo.py`
(the supervisor: API, one Celery worker with beat, the UI; it restarts what dies) with no
DATABASE_URL and no REDIS_URL (SQLite and the embedded broker), DATA_DIR a fresh temporary
folder, HOST/PORT/UI_PORT free loopback ports. The worker's LLM is Quarry's `offline`
model (no key). Over a nominal 2 hours (`--scale` shrinks it, `--duration` sets minutes):

- U users (default 5), S sessions each (default 2), each session asking one question after
  another, a pause of 30-70 s between them (questions the offline model answers: averages
  by group, distributions, counts, correlations, top N... over a census-like CSV), reading
  each answer's event stream to `done`: ~1,300 turns in the full run;
- a new small CSV upload every minute (by one of the users, in turn), waited to `ready`,
  then one question in a new session over it;
- two forced worker restarts: `kill -9` of the pid in DATA_DIR/run/worker.pid at 1/3 and
  2/3 of the run; the supervisor must bring the worker back (and the reaper the runs).

At the end it waits for unfinished runs (a grace period), then reports turns asked /
succeeded / failed / cancelled / without an answer, runs left unfinished in the SQLite file,
worker crashes in its log other than the forced ones, restarts seen, uploads, turn latency,
the memory of the API and the worker (with its children) at start and end, and sandbox
zygotes left behind by the killed workers. Results: bench-results/soak.json. It asserts
nothing.

    python -m tests.bench.bench_soak [--scale 1.0 | --duration MIN] [--users 5]
        [--sessions 2] [--upload-every 60] [--no-ui] [--logs DIR]
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
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

from tests.bench.bench_turn import _free_port
from tests.bench.clients import Balancer, Client, Errors, Streams, dist, fmt, mark, pct, scan_log
from tests.bench.stack import ROOT, Procs, sandbox_zygotes, snapshot

NOMINAL_MIN = 120.0
QUESTIONS = [
    "What is the average income by education?",
    "Show the distribution of age",
    "How many rows are there?",
    "Count the people by workclass",
    "What is the correlation between age and income?",
    "Top 5 income by education",
    "Plot income vs age",
    "Are there missing values?",
    "What is the maximum income by workclass?",
    "What is the median age by education?",
]
NOT_UNDERSTOOD = "only understand common analysis requests"


def census_csv(rows: int, seed: int) -> bytes:
    rng = random.Random(seed)
    education = ["HS", "BS", "MS", "PhD"]
    workclass = ["Private", "Gov", "Self"]
    lines = ["age,income,education,workclass"]
    for _ in range(rows):
        lines.append(
            f"{rng.randint(18, 80)},{rng.randint(15_000, 150_000)},"
            f"{rng.choice(education)},{rng.choice(workclass)}"
        )
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Turn:
    user: int
    session: str
    question: str
    at: float  # seconds from the start
    post: str = ""
    run_id: str = ""
    first_s: float | None = None
    done_s: float | None = None
    status: str = ""
    error: str = ""
    answer_understood: bool | None = None
    reconnects: int = 0


@dataclass
class Restart:
    at: float  # seconds from the start, when killed
    old_pid: int
    new_pid: int | None = None
    pid_back_s: float | None = None  # until the pid file named a new process
    ready_s: float | None = None  # until the new worker logged "ready."
    in_flight: int = 0  # turns asked before the kill and not done at it
    in_flight_status: dict[str, int] = field(default_factory=dict)
    in_flight_done_s: list[float] = field(default_factory=list)  # their 202 -> done
    zygotes_before: list[int] = field(default_factory=list)
    zygotes_left: list[int] = field(default_factory=list)  # alive 30 s after the kill


class Soak:
    def __init__(self, args: argparse.Namespace, data: Path, base: str, procs: Procs) -> None:
        self.args = args
        self.data = data
        self.base = base
        self.procs = procs
        self.balancer = Balancer([base])
        self.errors = Errors()
        self.streams = Streams()
        self.stop = asyncio.Event()
        self.turns: list[Turn] = []
        self.uploads: list[dict[str, Any]] = []
        self.restarts: list[Restart] = []
        self.at_kill: list[list[Turn]] = []  # the turns in flight at each kill
        self.running: dict[str, float] = {}  # run id -> accepted (monotonic), until done
        self.memory: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.helper = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.clients: list[Client] = []
        self.zygotes_seen: dict[int, float] = {}

    def client(self) -> Client:
        c = Client(self.balancer, self.errors, self.streams, read_timeout_s=60.0)
        self.clients.append(c)
        return c

    def pid(self, name: str) -> int | None:
        try:
            return int((self.data / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    async def snapshot(self, pss: bool) -> dict[str, Any]:
        items = [(n, p) for n in ("api", "worker", "ui") if (p := self.pid(n)) is not None]
        call = functools.partial(snapshot, items, None, pss, os.getpid())
        snap: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(self.helper, call)
        self.procs.seen.update({int(k): v for k, v in snap["seen"].items()})
        return snap

    async def zygotes(self) -> dict[int, float]:
        """The sandbox zygotes of this soak's workers: those seen under a worker of ours
        (the killed worker's zygotes are orphans by then; they are remembered)."""
        found = await asyncio.get_running_loop().run_in_executor(self.helper, sandbox_zygotes)
        worker = self.pid("worker")
        ours: dict[int, float] = {}
        for pid, created in found.items():
            with contextlib.suppress(psutil.Error):
                ancestors = [p.pid for p in psutil.Process(pid).parents()]
                if worker in ancestors or pid in self.zygotes_seen:
                    ours[pid] = created
        self.zygotes_seen.update(ours)
        return ours

    # --- people --------------------------------------------------------------------------

    async def ask(self, client: Client, user: int, session: str, question: str) -> Turn:
        turn = Turn(user=user, session=session, question=question, at=self.elapsed())
        self.turns.append(turn)
        path = f"/api/sessions/{session}/messages"
        response = await client.request(
            "POST /messages", "POST", path, 202, json={"content": question}
        )
        if response is None:
            turn.post, turn.status = "error", "rejected"
            return turn
        accepted = time.monotonic()
        turn.post, turn.run_id = "202", str(response.json()["run_id"])
        self.running[turn.run_id] = accepted
        try:
            f = await client.follow(
                turn.run_id, accepted, accepted + self.args.turn_timeout, "user", self.stop
            )
        finally:
            self.running.pop(turn.run_id, None)
        turn.first_s, turn.done_s, turn.status = f.first_s, f.done_s, f.status
        turn.error, turn.reconnects = f.error, f.reconnects
        if f.status == "failed":
            self.errors.add("run failed", f.error)
        elif f.status == "cancelled":
            self.errors.add("run cancelled", f.error)
        if f.status == "succeeded":
            got = await client.request(
                "GET messages", "GET", f"/api/sessions/{session}/messages?limit=200", 200
            )
            if got is not None:
                answers = [m for m in got.json()["data"] if m.get("role") == "assistant"]
                if answers:
                    turn.answer_understood = NOT_UNDERSTOOD not in str(answers[-1]["content"])
        return turn

    async def session_loop(self, client: Client, user: int, session: str, end: float) -> None:
        rng = random.Random(hash((user, session)) & 0xFFFF)
        await asyncio.sleep(rng.uniform(0, self.args.max_pause / 2))
        while time.monotonic() < end and not self.stop.is_set():
            await self.ask(client, user, session, rng.choice(QUESTIONS))
            with contextlib.suppress(TimeoutError):
                pause = rng.uniform(self.args.min_pause, self.args.max_pause)
                await asyncio.wait_for(self.stop.wait(), pause)

    async def uploader(self, people: list[Client], end: float) -> None:
        n = 0
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.upload_every)
            if time.monotonic() >= end or self.stop.is_set():
                return
            n += 1
            client = people[n % len(people)]
            rows = random.Random(n).randint(200, 5000)
            at = self.elapsed()
            dataset_id, took = await client.upload(f"extra-{n}.csv", census_csv(rows, 1000 + n))
            self.uploads.append(
                {
                    "n": n,
                    "at": round(at, 1),
                    "rows": rows,
                    "ok": dataset_id is not None,
                    "seconds": round(took, 2),
                }
            )
            if dataset_id is not None:
                session = await client.session(dataset_id, f"upload {n}")
                if session is not None:
                    await self.ask(client, n % len(people), session, QUESTIONS[0])

    async def killer(self, when: list[float]) -> None:
        for at in when:
            await asyncio.sleep(max(0.0, self.t0 + at - time.monotonic()))
            if self.stop.is_set():
                return
            if self.args.kill_mid_turn:
                # a kill that catches a turn tests recovery: wait (up to a minute) for one
                # accepted 50 ms ago or more and not done
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not self.stop.is_set():
                    now = time.monotonic()
                    if any(now - t >= 0.05 for t in self.running.values()):
                        break
                    await asyncio.sleep(0.01)
            old = self.pid("worker")
            if old is None:
                self.errors.add("restart: no worker pid file", str(at))
                continue
            try:
                cmd = " ".join(psutil.Process(old).cmdline())
            except psutil.Error:
                cmd = ""
            if "celery" not in cmd:
                self.errors.add("restart: the pid file names no worker", f"{old}: {cmd}")
                continue
            restart = Restart(at=round(self.elapsed(), 1), old_pid=old)
            restart.zygotes_before = sorted(await self.zygotes())
            print(f"{self.elapsed():.0f}s: kill -9 worker {old}", file=sys.stderr)
            log = self.data / "logs" / "worker.log"
            offset = log.stat().st_size if log.exists() else 0
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            self.at_kill.append(
                [t for t in self.turns if t.run_id and t.done_s is None and t.status == ""]
            )
            self.restarts.append(restart)
            while time.monotonic() - killed < 180 and not self.stop.is_set():
                await asyncio.sleep(0.25)
                pid = self.pid("worker")
                if restart.new_pid is None and pid not in (None, old):
                    restart.new_pid, restart.pid_back_s = pid, round(time.monotonic() - killed, 1)
                if restart.new_pid is not None and _logged_ready(log, offset):
                    restart.ready_s = round(time.monotonic() - killed, 1)
                    break
            await asyncio.sleep(max(0.0, killed + 30 - time.monotonic()))
            alive = []
            for pid in restart.zygotes_before:
                with contextlib.suppress(psutil.Error):
                    if psutil.Process(pid).is_running():
                        alive.append(pid)
            restart.zygotes_left = alive

    def settle_restarts(self) -> None:
        for r, turns in zip(self.restarts, self.at_kill, strict=True):
            r.in_flight = len(turns)
            r.in_flight_status = dict(Counter(t.status or "?" for t in turns))
            r.in_flight_done_s = [round(t.done_s, 1) for t in turns if t.done_s is not None]

    async def sampler(self) -> None:
        while not self.stop.is_set():
            snap = await self.snapshot(False)
            mem = snap["memory"]
            zyg = await self.zygotes()
            self.memory.append(
                {
                    "t": round(self.elapsed()),
                    "api_rss_mb": mem.get("api", {}).get("rss_mb"),
                    "worker_rss_mb": round(
                        sum(v["rss_mb"] for v in mem.get("worker", {}).values()), 1
                    ),
                    "zygotes": len(zyg),
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.args.sample_every)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def runs_in_db(self) -> dict[str, Any]:
        path = self.data / "quarry.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            runs = dict(
                conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
            )
            datasets = dict(
                conn.execute("SELECT status, count(*) FROM datasets GROUP BY status").fetchall()
            )
            failed = conn.execute(
                "SELECT substr(coalesce(error, ''), 1, 200), count(*) FROM runs "
                "WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 6"
            ).fetchall()
        finally:
            conn.close()
        return {"runs": runs, "datasets": datasets, "failed_errors": failed}

    async def run(self) -> dict[str, Any]:
        args = self.args
        duration_s = args.minutes * 60
        print("setup: users, datasets, sessions", file=sys.stderr)
        people: list[Client] = []
        sessions: list[tuple[Client, int, str]] = []
        for u in range(args.users):
            c = self.client()
            if not await c.sign_up(f"soak-{os.getpid()}-{u}@example.com"):
                continue
            dataset_id, _ = await c.upload(f"census-{u}.csv", census_csv(1000 + 500 * u, u))
            if dataset_id is None:
                continue
            people.append(c)
            for s in range(args.sessions):
                sid = await c.session(dataset_id, f"soak {u}.{s}")
                if sid is not None:
                    sessions.append((c, u, sid))
        if not sessions:
            raise RuntimeError(f"setup failed: {self.errors.as_dict()}")
        setup_errors = self.errors.as_dict()
        self.errors = Errors()
        for c in self.clients:
            c.errors = self.errors
        # a turn first, so that the worker's first-turn costs are not in the start figure
        await self.ask(people[0], 0, sessions[0][2], QUESTIONS[0])
        self.turns.clear()
        start = await self.snapshot(True)
        zygotes_start = await self.zygotes()
        self.t0 = time.monotonic()
        end = self.t0 + duration_s
        print(
            f"soak: {len(sessions)} sessions, {args.minutes:g} min; worker kills at "
            f"{duration_s / 3:.0f} s and {2 * duration_s / 3:.0f} s",
            file=sys.stderr,
        )
        tasks = [asyncio.create_task(self.session_loop(c, u, s, end)) for c, u, s in sessions] + [
            asyncio.create_task(self.uploader(people, end))
        ]
        helpers = [
            asyncio.create_task(self.killer([duration_s / 3, 2 * duration_s / 3])),
            asyncio.create_task(self.sampler()),
        ]
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        print("soak over: waiting for answers in flight", file=sys.stderr)
        _, pending = await asyncio.wait(tasks, timeout=args.turn_timeout + 30)
        self.stop.set()
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
        self.settle_restarts()
        # the grace period: unfinished runs should be settled (re-queued, failed)
        grace_end = time.monotonic() + args.grace
        while time.monotonic() < grace_end:
            db = await asyncio.to_thread(self.runs_in_db)
            if not any(db["runs"].get(s) for s in ("queued", "running")):
                break
            await asyncio.sleep(5)
        db = await asyncio.to_thread(self.runs_in_db)
        end_snap = await self.snapshot(True)
        zygotes_end = await self.zygotes()
        return {
            "setup_errors": setup_errors,
            "db": db,
            "memory_start": start["memory"],
            "memory_end": end_snap["memory"],
            "zygotes_start": sorted(zygotes_start),
            "zygotes_end": sorted(zygotes_end),
            "elapsed_s": round(self.elapsed(), 1),
            "sessions": len(sessions),
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)
        self.helper.shutdown(wait=True, cancel_futures=True)


# --- the report --------------------------------------------------------------------------------


def _logged_ready(log: Path, offset: int) -> bool:
    """The worker log says, after `offset`, that a worker is ready (Celery's "... ready.")."""
    try:
        with open(log, "rb") as f:
            if f.seek(0, os.SEEK_END) < offset:  # rotated
                offset = 0
            f.seek(offset)
            return b' ready.","level"' in f.read()
    except OSError:
        return False


def supervisor_events(path: Path) -> dict[str, Any]:
    """What scripts/demo.py said: stops (with why) and starts of each child."""
    stops: Counter[str] = Counter()
    lines = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if " stopped (" in line:
            name = line.split("quarry: ", 1)[-1].split(" ", 1)[0]
            why = line.split(" stopped (", 1)[1].split(")", 1)[0]
            stops[f"{name}: {why}"] += 1
            lines.append(line.strip())
    starts = Counter(
        line.split("quarry: ", 1)[-1].split(" ", 1)[0]
        for line in text.splitlines()
        if " started again " in line
    )
    return {"stops": dict(stops), "restarts": dict(starts), "stop_lines": lines[:20]}


def worker_starts(data: Path) -> int:
    n = 0
    for path in sorted((data / "logs").glob("worker.log*")):
        with contextlib.suppress(OSError):
            n += path.read_text(errors="replace").count(" starting worker\n")
    return n


def report(soak: Soak, out: dict[str, Any], logs_dir: Path, supervisor_log: Path) -> dict[str, Any]:
    args = soak.args
    turns = soak.turns
    by_status = Counter(t.status for t in turns)
    done = [t.done_s for t in turns if t.done_s is not None and t.status == "succeeded"]
    print(
        f"\nQuarry soak benchmark — embedded mode (SQLite, embedded broker) under "
        f"scripts/demo.py{' --no-ui' if args.no_ui else ''}; {os.cpu_count()} CPUs; the "
        "`offline` model"
    )
    print(
        f"  {args.minutes:g} min (scale {args.minutes / NOMINAL_MIN:.2f} of 2 h), {out['sessions']}"
        f" sessions of {args.users} users asking every {args.min_pause:g}-{args.max_pause:g} s,"
        f" an upload every {args.upload_every:g} s, worker kill -9 at 1/3 and 2/3"
    )
    print("\nTurns")
    understood = [t for t in turns if t.answer_understood is not None]
    print(
        f"  asked {len(turns)}: "
        + ", ".join(f"{k or '?'} {v}" for k, v in by_status.most_common())
        + f"; answers the offline model did not understand: "
        f"{sum(1 for t in understood if not t.answer_understood)} of {len(understood)}"
    )
    if done:
        print(
            f"  latency 202 -> done (s): p50 {fmt(statistics.median(done))}, p95 "
            f"{fmt(pct(done, 95))}, max {fmt(max(done))} (n {len(done)})"
        )
    renewals = sum(c.renewals for c in soak.clients)
    print(f"  access tokens renewed with the refresh token (after a 401): {renewals}")
    affected = [t for t in turns if t.reconnects]
    print(f"  turns whose stream had to reconnect: {len(affected)}")
    soak.errors.print("Errors by kind (target 0 apart from the restarts' effects)")

    db = out["db"]
    unfinished = sum(db["runs"].get(s, 0) for s in ("queued", "running"))
    print(
        f"\nRuns in the SQLite file after a grace period of up to {args.grace:g} s: {db['runs']}"
        f" -> unfinished {unfinished} {mark(unfinished == 0)} (target 0)"
    )
    for err, n in db["failed_errors"]:
        print(f"  failed: {n} x {err[:150]}")
    print(f"  datasets: {db['datasets']}")

    ok = [u for u in soak.uploads if u["ok"]]
    print(
        f"\nUploads during the soak: {len(soak.uploads)}, ready {len(ok)}, failed "
        f"{len(soak.uploads) - len(ok)}; to ready p50 "
        f"{fmt(statistics.median([u['seconds'] for u in ok]) if ok else None)} s, max "
        f"{fmt(max([u['seconds'] for u in ok]) if ok else None)} s"
    )

    print("\nForced worker restarts (kill -9 of DATA_DIR/run/worker.pid)")
    for r in soak.restarts:
        print(
            f"  at {r.at:.0f} s: pid {r.old_pid} -> {r.new_pid}; new pid file after "
            f"{fmt(r.pid_back_s, 1)} s, the new worker logged ready after {fmt(r.ready_s, 1)} s;"
            f" zygotes of the killed worker still alive 30 s later: {len(r.zygotes_left)} of "
            f"{len(r.zygotes_before)}"
        )
        done_s = r.in_flight_done_s
        print(
            f"    turns in flight at the kill: {r.in_flight} -> {r.in_flight_status or '-'}"
            + (f"; their 202 -> done: max {max(done_s):.1f} s" if done_s else "")
        )
    sup = supervisor_events(supervisor_log)
    forced = len(soak.restarts)
    worker_stops = sum(n for k, n in sup["stops"].items() if k.startswith("worker"))
    print(f"  the supervisor saw: stops {sup['stops'] or '{}'}, restarts {sup['restarts'] or '{}'}")
    print(
        f"  worker starts in its log: {worker_starts(soak.data)} (1 + restarts); worker stops "
        f"other than the {forced} forced: {worker_stops - forced} {mark(worker_stops == forced)}"
    )
    other_stops = {k: n for k, n in sup["stops"].items() if not k.startswith("worker")}
    if other_stops:
        print(f"  other children stopped: {other_stops}")

    print("\nLogs: crash markers and error-level events (worker.log and api.log, rotated too)")
    logs_out: dict[str, Any] = {}
    for path in sorted((soak.data / "logs").glob("*.log*")):
        found = scan_log(path)
        logs_out[path.name] = found
        print(f"  {path.name}: markers {found['markers'] or '-'}")
        for event, n in list(found["errors"].items())[:8]:
            print(f"    {n:>6}  {event}")
    crash = sum(
        v.get("markers", {}).get("Unrecoverable error", 0) for k, v in logs_out.items()
        if k.startswith("worker")
    )  # fmt: skip
    print(f"  'Unrecoverable error' in the worker log: {crash} {mark(crash == 0)}")

    print("\nMemory (MB)              RSS start    RSS end  PSS start    PSS end")
    for name in ("api", "worker", "ui"):
        a, b = out["memory_start"].get(name), out["memory_end"].get(name)
        if a is None or b is None:
            continue
        if name == "worker":
            a = {k: sum(p[k] for p in a.values()) for k in ("rss_mb", "pss_mb", "count")}
            b = {k: sum(p[k] for p in b.values()) for k in ("rss_mb", "pss_mb", "count")}
            label = f"worker + children ({b['count']:.0f})"
        else:
            label = name
        print(
            f"  {label:<24} {a['rss_mb']:>9.0f} {b['rss_mb']:>10.0f} {a['pss_mb']:>10.0f} "
            f"{b['pss_mb']:>10.0f}"
        )
    series = [f"{m['t']}s:{m['api_rss_mb']:.0f}/{m['worker_rss_mb']:.0f}/{m['zygotes']}z"
              for m in soak.memory if m.get("api_rss_mb") is not None]  # fmt: skip
    if series:
        print("  over time (API RSS / worker tree RSS / zygotes):")
        for i in range(0, len(series), 6):
            print("    " + "  ".join(series[i : i + 6]))
    print(
        f"  sandbox zygotes of ours: {len(out['zygotes_start'])} at start, "
        f"{len(out['zygotes_end'])} at the end"
    )
    results = {
        "minutes": args.minutes,
        "users": args.users,
        "sessions": out["sessions"],
        "turns": {"asked": len(turns), "by_status": dict(by_status)},
        "latency_done_s": dist(done),
        "errors": soak.errors.as_dict(),
        "setup_errors": out["setup_errors"],
        "db_after_grace": db,
        "unfinished_runs": unfinished,
        "uploads": soak.uploads,
        "restarts": [asdict(r) for r in soak.restarts],
        "supervisor": sup,
        "logs": logs_out,
        "memory_start": out["memory_start"],
        "memory_end": out["memory_end"],
        "memory_series": soak.memory,
        "turn_list": [asdict(t) for t in turns],
    }
    return results


# --- main ------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wait_api(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("scripts/demo.py exited")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = httpx.get(f"{base}/readyz", timeout=3).json()
            if str((body.get("checks") or {}).get("workers:analysis", "")).startswith("ok"):
                return
        time.sleep(0.5)
    raise RuntimeError(f"the API or the worker did not come up in {timeout_s:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="of the nominal 2 hours")
    parser.add_argument("--duration", type=float, help="minutes (instead of --scale)")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=2, help="per user")
    parser.add_argument("--min-pause", type=float, default=30.0)
    parser.add_argument("--max-pause", type=float, default=70.0)
    parser.add_argument("--upload-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--turn-timeout", type=float, default=300.0)
    parser.add_argument("--grace", type=float, default=180.0, help="s for unfinished runs")
    parser.add_argument("--sample-every", type=float, default=60.0, help="s between samples")
    parser.add_argument("--no-ui", action="store_true", help="scripts/demo.py --no-ui")
    parser.add_argument(
        "--kill-any-time",
        dest="kill_mid_turn",
        action="store_false",
        help="kill the worker at 1/3 and 2/3 sharp (default: at the first moment after "
        "them when a turn is in flight, within a minute)",
    )
    parser.add_argument("--logs", type=Path, help="keep the logs and the data folder here")
    args = parser.parse_args()
    args.minutes = args.duration if args.duration else NOMINAL_MIN * args.scale

    demo = ROOT / "scripts" / "demo.py"
    if not demo.is_file():
        print("scripts/demo.py (make demo's supervisor) is missing", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="quarry-bench-soak-"))
    data = work / "data"
    logs = args.logs or work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = Procs(logs)
    port, ui_port = _free_port(), _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUARRY_", "LLM_", "OPENAI_", "SANDBOX_", "DB_", "REDIS_"))
        and k not in ("DATABASE_URL", "JWT_SECRET_KEY", "PYTHONPATH")
    }
    env.update(HOST="127.0.0.1", PORT=str(port), UI_PORT=str(ui_port), DATA_DIR=str(data))
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] | None = None
    stopped = False
    try:
        command = [sys.executable, str(demo)] + (["--no-ui"] if args.no_ui else [])
        supervisor = procs.spawn("supervisor", command, env)
        print(f"started scripts/demo.py (data: {data}, logs: {logs})", file=sys.stderr)
        wait_api(base, supervisor, 180)
        results = asyncio.run(_run(args, data, base, procs, logs))
    except KeyboardInterrupt:
        stopped = True
        print("\ninterrupted; cleaning up", file=sys.stderr)
    except Exception:
        print((logs / "supervisor.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.close(grace_s=40)  # the supervisor stops its children (15 s each at most)
        left = [p.pid for p in psutil.process_iter() if _uses(p, data)]
        for pid in left:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        print(
            f"cleaned up (processes still using the data folder, killed: {left})", file=sys.stderr
        )
        if args.logs is not None:
            with contextlib.suppress(OSError):
                shutil.copytree(data / "logs", logs / "data-logs", dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    if results is None:
        return 130 if stopped else 1
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out / 'soak.json'}")
    return 0


def _uses(proc: psutil.Process, data: Path) -> bool:
    """A process of this soak: its environment names our DATA_DIR."""
    with contextlib.suppress(psutil.Error):
        return proc.environ().get("DATA_DIR") == str(data) and proc.pid != os.getpid()
    return False


async def _run(
    args: argparse.Namespace, data: Path, base: str, procs: Procs, logs: Path
) -> dict[str, Any]:
    soak = Soak(args, data, base, procs)
    try:
        out = await soak.run()
        return report(soak, out, logs, logs / "supervisor.log")
    finally:
        soak.stop.set()
        await soak.close()


if __name__ == "__main__":
    sys.exit(main())
