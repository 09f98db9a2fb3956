"""The security suite's sandbox, secrets, listener and host checks.

Every snippet runs in a real sandbox of the process backend: through a package-scoped warm
`ProcessBackend` (fast, and it covers the warm pool) or through the operator's CLI,
`python -m worker.sandbox run`, in a subprocess (cold by default, warm where a test says
so). The process that starts the sandboxes holds fake secrets in its environment; every
result is checked for them, for the host's /etc/passwd and for the worker's source before
a test looks at anything else.

The warm backend's sandboxes run as uids 63000+ and the CLI's as 64000+, so that what the
suite leaves behind cannot be confused with another sandbox pool on the same machine
(the default is 61000+).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import worker.sandbox.process as process_module
from tests.builders import dataset_files
from worker.sandbox.process import ProcessBackend, ProcessConfig

REPO = Path(__file__).resolve().parents[2]
WORKER_SOURCE = Path(process_module.__file__).resolve()
# A line of the worker's source that no result should ever contain.
WORKER_SENTINEL = "The worker never trusts the child"
PASSWD_SENTINEL = "root:x:0:0"

SECRETS = {
    "DATABASE_URL": "postgresql://quarry:topsecret-db-7c1f@db.internal:5432/quarry",
    "JWT_SECRET_KEY": "jwt-signing-secret-9b2e" + "k" * 24,
    "OPENAI_API_KEY": "sk-test-openai-secret-4d8a",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-e3f0",
}
# What must never appear in a result (the distinctive part of each secret).
SECRET_MARKERS = ("topsecret-db-7c1f", "jwt-signing-secret-9b2e", "openai-secret-4d8a", "e3f0")

WARM_UID_BASE = 63000
CLI_UID_BASE = 64000
SUITE_UIDS = range(WARM_UID_BASE, CLI_UID_BASE + 1000)
DEFAULT_LIMITS = {"timeout_s": 10, "memory_mb": 512, "max_output_bytes": 2 << 20}

CENSUS = pd.DataFrame(
    {
        "age": [25, 30, 35, 40, 45, 50, 55, 60],
        "income": [30000, 45000, 55000, 65000, 75000, 85000, 95000, 105000],
        "education": ["HS", "BS", "BS", "MS", "MS", "PhD", "PhD", "PhD"],
        "workclass": ["Private", "Private", "Gov", "Private", "Gov", "Private", "Self", "Self"],
    }
)


def assert_nothing_leaked(result: dict[str, Any]) -> None:
    text = json.dumps(result)
    for marker in SECRET_MARKERS:
        assert marker not in text, f"a secret reached the result: {marker}"
    assert PASSWD_SENTINEL not in text, "the host's /etc/passwd reached the result"
    assert WORKER_SENTINEL not in text, "the worker's source reached the result"


def refused(result: dict[str, Any], kind: str, fragment: str) -> None:
    """The snippet failed with this error type and a message containing `fragment`."""
    assert result["ok"] is False, result
    error = result["error"]
    assert error["type"] == kind, error
    assert fragment in error["message"], error


@pytest.fixture(scope="package", autouse=True)
def secret_environment() -> Iterator[dict[str, str]]:
    """Fake secrets in the environment of the process that starts the sandboxes (set
    before the backend below starts its pool)."""
    before = {name: os.environ.get(name) for name in SECRETS}
    os.environ.update(SECRETS)
    yield SECRETS
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="package")
def backend(secret_environment: dict[str, str]) -> Iterator[ProcessBackend]:
    config = ProcessConfig(warm=True, pool_size=2, uid_base=WARM_UID_BASE)
    with ProcessBackend(config) as warm:
        yield warm


class Sandbox:
    """Runs snippets in the warm backend; every result is checked for leaks first."""

    def __init__(self, backend: ProcessBackend) -> None:
        self.backend = backend

    def run(
        self,
        code: str,
        datasets: list[dict[str, str]] | None = None,
        workspace: list[dict[str, str]] | None = None,
        **limits: int,
    ) -> dict[str, Any]:
        job = {
            "code": code,
            "datasets": datasets or [],
            "workspace": workspace or [],
            "limits": {**DEFAULT_LIMITS, **limits},
        }
        result = self.backend.run(job)
        assert_nothing_leaked(result)
        return result


@pytest.fixture(scope="package")
def sandbox(backend: ProcessBackend) -> Sandbox:
    return Sandbox(backend)


def cli(
    code: str,
    *,
    cold: bool = True,
    datasets: dict[str, Path] | None = None,
    timeout: int = 10,
    memory_mb: int = 512,
    max_output_bytes: int | None = None,
) -> dict[str, Any]:
    """`python -m worker.sandbox run` in a subprocess whose environment holds the secrets;
    the result JSON it prints, checked for leaks."""
    folder = Path("/tmp") / f"quarry-security-code-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        code_file = folder / "snippet.py"
        code_file.write_text(code)
        args = [sys.executable, "-m", "worker.sandbox", "run", "--code-file", str(code_file)]
        args += ["--timeout", str(timeout), "--memory-mb", str(memory_mb)]
        if max_output_bytes is not None:
            args += ["--max-output-bytes", str(max_output_bytes)]
        if cold:
            args.append("--cold")
        for name, path in (datasets or {}).items():
            args += ["--dataset", f"{name}={path}"]
        env = {**os.environ, **SECRETS, "SANDBOX_UID_BASE": str(CLI_UID_BASE)}
        done = subprocess.run(
            args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False
        )
    finally:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert_nothing_leaked(result)
    return result


class Listener:
    """A TCP listener on 127.0.0.1 that counts every connection it is offered."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/data.csv"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.fixture(scope="package")
def listener() -> Iterator[Listener]:
    server = Listener()
    # The listener works: a connection from here is counted (then forgotten).
    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    deadline = 50
    while server.connections == 0 and deadline:
        threading.Event().wait(0.02)
        deadline -= 1
    assert server.connections == 1
    server.connections = 0
    yield server
    server.close()


@pytest.fixture
def host_path() -> Iterator[Path]:
    """A unique path under the host's /tmp that no snippet may create."""
    path = Path("/tmp") / f"quarry-security-{uuid.uuid4().hex}"
    yield path
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                child.unlink()
    elif path.exists():
        path.unlink()


@pytest.fixture(scope="package")
def census(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The census frame as the worker stores datasets: Arrow IPC (uncompressed), Parquet, CSV."""
    return dataset_files(CENSUS, tmp_path_factory.mktemp("census"))


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (uid, parent pid) for every live process on the host."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields["State"].split()[0] in ("Z", "X"):  # exited, not yet reaped
            continue
        found[int(entry)] = (int(fields["Uid"].split()[0]), int(fields["PPid"]))
    return found


def suite_sandbox_processes(backend: ProcessBackend | None = None) -> list[int]:
    """Processes running as one of this suite's sandbox uids, other than the warm pool's
    idle children (whose parent is the backend's zygote)."""
    zygote = backend._zygote.pid if backend is not None and backend._zygote else None
    return [
        pid for pid, (uid, parent) in processes().items() if uid in SUITE_UIDS and parent != zygote
    ]


def pool_children(backend: ProcessBackend) -> list[int]:
    """The warm pool's waiting children that have finished isolating themselves (they
    drop to their sandbox uid last), once the pool has refilled and the child of the last
    job is gone (the same set twice in a row)."""
    zygote = backend._zygote
    assert zygote is not None
    previous: list[int] = []
    for _ in range(100):
        children = sorted(
            pid
            for pid, (uid, parent) in processes().items()
            if parent == zygote.pid and WARM_UID_BASE <= uid < CLI_UID_BASE
        )
        if children == previous and len(children) >= backend.config.pool_size:
            return children
        previous = children
        time.sleep(0.1)
    return previous
