"""The commands in README.md and docs/SETUP.md still work, run as a reader would run them.

Every shell block (```sh, ```bash) in those files carries a marker on the line before it:

- `<!-- doc-test: run -->`: runs to its end, exit code 0, from the repository root;
- `<!-- doc-test: demo -->`: starts `make demo`; the test starts it (on free ports, with a
  scratch DATA_DIR) and waits until the API and the UI answer;
- `<!-- doc-test: session -->`: talks to that running demo; a file's session blocks run in
  order in one shell, as typed into one terminal (the default addresses
  http://127.0.0.1:8000 and :8501 are replaced by the demo's free ports);
- `<!-- doc-test: skip REASON -->`: not runnable here; REASON says what it needs (Docker,
  Kubernetes, servers of your own) or why not (it is the test suite itself, a benchmark).

Nothing is faked: `make demo` is the real embedded mode (SQLite, the file transport, a real
Celery worker, the offline model, the process sandbox).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.test_agent_integration import ROOT, _free_port

FILES = ("README.md", "docs/SETUP.md")
SHELLS = {"sh", "bash", "shell"}
KINDS = {"run", "demo", "session", "skip"}
MARKER = re.compile(r"^<!--\s*doc-test:\s*(\w+)\s*(.*?)\s*-->$")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    kind: str
    reason: str
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def shell_blocks(file: str) -> list[Block]:
    """The file's shell blocks, each with the marker on the line before its fence."""
    lines = (ROOT / file).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if fence.group(1) not in SHELLS:
            continue
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.match(previous.strip())
        kind, reason = (marker.group(1), marker.group(2)) if marker else ("", "")
        blocks.append(Block(file, start + 1, kind, reason, "\n".join(body) + "\n"))
    return blocks


ALL = [block for file in FILES for block in shell_blocks(file)]


def test_every_shell_block_says_whether_it_runs_here() -> None:
    unmarked = [str(b) for b in ALL if b.kind not in KINDS]
    assert unmarked == [], "mark these blocks with <!-- doc-test: run|demo|session|skip ... -->"
    vague = [str(b) for b in ALL if b.kind == "skip" and len(b.reason) < 8]
    assert vague == [], "a skipped block says what it needs"
    assert any(b.kind == "demo" for b in ALL), "the docs show how to start Quarry"


@pytest.mark.parametrize("block", [b for b in ALL if b.kind == "run"], ids=str)
def test_a_runnable_block_runs(block: Block, tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=ROOT, env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{block} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@dataclass
class Demo:
    api: str
    ui: str
    data: Path


def _wait(url: str, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180  # a first `make demo` also creates the database
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`make demo` as the docs show it, on free ports and a scratch DATA_DIR."""
    (command,) = [b for b in ALL if b.kind == "demo"][:1]
    assert "make demo" in command.text
    data = tmp_path_factory.mktemp("demo")
    api_port, ui_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUARRY_", "LLM_"))}
    for key in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "JWT_SECRET_KEY"):
        env.pop(key, None)
    env.update(
        DATA_DIR=str(data), HOST="127.0.0.1", PORT=str(api_port), UI_PORT=str(ui_port),
        SANDBOX_UID_BASE="67000", LOG_LEVEL="WARNING",
    )  # fmt: skip
    log = data / "make-demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["make", "demo"], cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=out
        )
    found = Demo(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}", data)
    try:
        _wait(f"{found.api}/healthz", "the API", proc, log)
        _wait(f"{found.ui}/_stcore/health", "the UI", proc, log)
        yield found
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_make_demo_serves_the_api_the_ui_and_a_demo_account(demo: Demo) -> None:
    printed = (demo.data / "make-demo.log").read_text()
    email = re.search(r"[\w.+-]+@[\w.-]+", printed.split("demo account", 1)[-1])
    assert email, printed
    assert (demo.data / "quarry.db").exists()  # embedded mode: SQLite under DATA_DIR
    assert httpx.get(f"{demo.api}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("file", sorted({b.file for b in ALL if b.kind == "session"}))
def test_the_session_blocks_work_against_the_demo(file: str, demo: Demo, tmp_path: Path) -> None:
    script = "".join(b.text for b in ALL if b.file == file and b.kind == "session")
    script = script.replace("http://127.0.0.1:8000", demo.api)
    script = script.replace("http://127.0.0.1:8501", demo.ui)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{file}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # what a reader is told to expect
    assert '"done"' in done.stdout or "event: done" in done.stdout, done.stdout[-3000:]
