"""`make demo`: Quarry's embedded mode on one machine, supervised.

    python scripts/demo.py [--no-ui] [--no-seed]

Migrates the SQLite database, then starts three processes and keeps them running: the API
(uvicorn), one Celery worker with the reapers' schedule (`--beat`), and the chat UI
(Streamlit). A process that stops is started again after a back-off (1 s, doubling up to
30 s; back to 1 s once it has run for a minute), and the terminal says so with the last
lines of its log. Each log is appended to, never overwritten, under DATA_DIR/logs/ and
rotated at LOG_MAX_MB (three old files kept), so the evidence of a crash survives the next
start. The current pid of each process is in DATA_DIR/run/<name>.pid. Ctrl-C (or SIGTERM)
stops everything.

Environment: HOST (127.0.0.1), PORT (8000), UI_PORT (8501), DATA_DIR (.data), LOG_MAX_MB
(20), and every Quarry setting (docs/SETUP.md), which the processes inherit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE_AFTER_S = 60.0  # ran this long: the next stop starts the back-off again
KEEP_LOGS = 3
STOP_GRACE_S = 15.0


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} quarry: {message}", flush=True)


def rotate(log: Path, max_bytes: int) -> bool:
    """name.log -> name.log.1 -> ... (KEEP_LOGS kept). The running process keeps writing to
    name.log: it is copied, then truncated (its descriptor appends, so it goes on at 0)."""
    try:
        if log.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(KEEP_LOGS - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{n + 1}"))
    shutil.copyfile(log, log.with_name(f"{log.name}.1"))
    with open(log, "r+b") as f:
        f.truncate(0)
    return True


def tail(log: Path, lines: int = 6) -> list[str]:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line[:300] for line in text.splitlines()[-lines:]]


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Child:
    name: str
    command: list[str]
    logs: Path
    run: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # stops in a row that came too soon
    next_start: float = 0.0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.logs / f"{self.name}.log"

    def start(self, max_log_bytes: int) -> None:
        rotate(self.log, max_log_bytes)
        with open(self.log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - our own commands
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them
            )
        self.started = time.monotonic()
        (self.run / f"{self.name}.pid").write_text(f"{self.proc.pid}\n")

    def check(self) -> int | None:
        """The exit code if it stopped since the last look."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is None:
            return None
        # what it started and left behind (a worker killed with -9 leaves its pool children)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            (self.run / f"{self.name}.pid").unlink()
        return code

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.check()


class Stopping(Exception):
    pass


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopping(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-ui", action="store_true", help="API and worker only")
    parser.add_argument("--no-seed", action="store_true", help="no demo account or sample")
    args = parser.parse_args(argv)

    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    ui_port = os.environ.get("UI_PORT", "8501")
    data = Path(os.environ.get("DATA_DIR", ".data"))
    if not data.is_absolute():
        data = ROOT / data
    logs, run = data / "logs", data / "run"
    for folder in (logs, run):
        folder.mkdir(parents=True, exist_ok=True)
    max_log_bytes = int(float(os.environ.get("LOG_MAX_MB", "20")) * 1024 * 1024)
    api_url = f"http://{host}:{port}"
    env = {**os.environ, "DATA_DIR": str(data), "QUARRY_API_URL": api_url}
    env.setdefault("PYTHONUNBUFFERED", "1")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    say(f"embedded mode: SQLite database and files under {data}/")
    migrate = subprocess.run([sys.executable, "-m", "api.prestart"], cwd=ROOT, env=env, check=False)
    if migrate.returncode != 0:
        say("the database could not be prepared (see above); stopping")
        return 1

    worker = [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--beat",
              "-Q", "analysis,datasets,maintenance", "--concurrency", "1",
              "--without-gossip", "--without-mingle", "-l", "INFO"]  # fmt: skip
    api = [str(BIN / "uvicorn"), "api.main:app", "--host", host, "--port", port,
           "--no-access-log"]  # fmt: skip
    children = [Child("worker", worker, logs, run, env), Child("api", api, logs, run, env)]
    if not args.no_ui:
        ui = [str(BIN / "streamlit"), "run", "frontend/server.py", "--server.address", host,
              "--server.port", ui_port, "--server.headless", "true"]  # fmt: skip
        children.append(Child("ui", ui, logs, run, env))
    try:
        for child in children[:2]:
            child.start(max_log_bytes)
        say(f"API and its docs: {api_url}/docs    logs: {logs}/")
        if not args.no_seed:
            subprocess.run(  # waits for the API, prints how to sign in
                [sys.executable, "-m", "frontend.seed"], cwd=ROOT, env=env, check=False
            )
        for child in children[2:]:  # the UI, once there is something to sign in to
            child.start(max_log_bytes)
            say(f"chat UI: http://{host}:{ui_port}    (Ctrl-C stops everything)")
        supervise(children, max_log_bytes)
    except Stopping as why:
        say(f"{why}: stopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
    return 0


def supervise(children: list[Child], max_log_bytes: int) -> None:
    last_rotation = time.monotonic()
    while True:
        now = time.monotonic()
        for child in children:
            code = child.check()
            if code is not None:
                ran = now - child.started
                child.failures = 0 if ran >= STABLE_AFTER_S else child.failures + 1
                wait = BACKOFF_S[min(max(child.failures - 1, 0), len(BACKOFF_S) - 1)]
                child.next_start = now + wait
                say(
                    f"{child.name} stopped ({describe(code)}) after {ran:.0f} s; "
                    f"restarting in {wait:g} s. Its last lines ({child.log}):"
                )
                for line in tail(child.log):
                    print(f"    {line}", flush=True)
            elif child.proc is None and now >= child.next_start:
                child.start(max_log_bytes)
                child.restarts += 1
                say(f"{child.name} started again (pid {child.proc.pid if child.proc else '?'}, "
                    f"restart {child.restarts})")  # fmt: skip
        if now - last_rotation > 10:
            for child in children:
                rotate(child.log, max_log_bytes)
            last_rotation = now
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
