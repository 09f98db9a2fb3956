"""The four images, run as the compose stack runs them, against the test PostgreSQL and
Redis: the api image migrates an empty database (`python -m api.prestart`) and serves; the
worker image converts an upload and answers a question, its snippets running in sibling
`quarry-runner` containers (the `docker` sandbox backend, with the data directory mapped as
the engine's host sees it); the frontend image serves the UI. Each container runs as compose
and the chart run it: non-root, read-only root filesystem, all capabilities dropped, and
its image's own HEALTHCHECK has to report `healthy`.

Needs a Docker engine and the images (`make images`; where no registry answers, build the
base with scripts/local-base-image.sh and pass PYTHON_IMAGE). Skipped otherwise, saying which is
missing. The containers share the host's network (PostgreSQL and Redis listen on
127.0.0.1), so ports 8000 and 8501, which the images' health checks probe, must be free.
Differences from compose, on purpose: no socket proxy (its image comes from a registry; the
worker gets the engine's socket through its group), and no compose itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, TEST_SECRET, create_database, drop_database

TAG = os.environ.get("QUARRY_E2E_IMAGE_TAG", "latest")
IMAGES = {c: f"quarry-{c}:{TAG}" for c in ("api", "worker", "frontend", "runner")}
SOCKET = Path("/var/run/docker.sock")
LOCKED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
          "--security-opt", "no-new-privileges", "--network", "host"]  # fmt: skip


def _docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}: {done.stderr[-2000:]}")
    return done.stdout.strip()


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def engine() -> None:
    try:
        _docker("info", "--format", "{{.ServerVersion}}", timeout=20)
    except (FileNotFoundError, AssertionError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Docker engine answers here ({exc})")
    missing = [image for image in IMAGES.values() if not _docker("images", "-q", image)]
    if missing:
        pytest.skip(f"images not built: {', '.join(missing)} (make images)")
    taken = [port for port in (8000, 8501) if _port_taken(port)]
    if taken:
        pytest.skip(f"ports {taken} are taken (the images' health checks probe them)")


class Containers:
    def __init__(self, data: Path, env: dict[str, str]) -> None:
        self.data, self.env = data, env
        self.names: list[str] = []

    def run(self, name: str, image: str, *command: str, extra: tuple[str, ...] = ()) -> str:
        env = [arg for key, value in self.env.items() for arg in ("-e", f"{key}={value}")]
        name = f"quarry-e2e-{name}-{os.getpid()}"
        _docker("rm", "-f", name, check=False)
        _docker("run", "-d", "--name", name, *LOCKED, *env, "-v", f"{self.data}:/data",
                *extra, image, *command)  # fmt: skip
        self.names.append(name)
        return name

    def healthy(self, name: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = json.loads(_docker("inspect", "--format", "{{json .State}}", name))
            if state.get("Health", {}).get("Status") == "healthy":
                return
            if state["Status"] != "running" or time.monotonic() > deadline:
                logs = _docker("logs", "--tail", "30", name, check=False)
                raise AssertionError(f"{name} is {state['Status']}/{state.get('Health')}: {logs}")
            time.sleep(2)

    def close(self) -> None:
        for name in self.names:
            _docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def stack(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containers]:
    url = create_database("quarry_e2e")
    data = tmp_path_factory.mktemp("image-data")
    os.chown(data, 10001, 10001)  # the images' user
    env = {
        "QUARRY_ENV": "production", "DATA_DIR": "/data", "DATABASE_URL": url,
        "REDIS_URL": REDIS_URL, "REDIS_PREFIX": f"quarry-e2e-{os.getpid()}:",
        "JWT_SECRET_KEY": TEST_SECRET, "LOG_JSON": "true",
    }  # fmt: skip
    containers = Containers(data, env)
    try:
        migrate = subprocess.run(
            ["docker", "run", "--rm", *LOCKED, "-v", f"{data}:/data",
             *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
             IMAGES["api"], "python", "-m", "api.prestart"],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        containers.run("api", IMAGES["api"])
        containers.run(
            "worker", IMAGES["worker"],
            "celery", "-A", "worker.celery_app", "worker", "--beat",
            "-Q", "analysis,datasets,maintenance", "--concurrency", "2", "--without-gossip",
            extra=(
                "--group-add", str(SOCKET.stat().st_gid), "-v", f"{SOCKET}:{SOCKET}",
                "-e", "SANDBOX_BACKEND=docker", "-e", f"SANDBOX_IMAGE={IMAGES['runner']}",
                "-e", f"SANDBOX_DOCKER_URL=unix://{SOCKET}",
                "-e", f"SANDBOX_DOCKER_HOST_DATA_DIR={data}", "-e", "WORKER_METRICS_PORT=0",
            ),
        )  # fmt: skip
        containers.run(
            "ui", IMAGES["frontend"], extra=("-e", "QUARRY_API_URL=http://127.0.0.1:8000")
        )
        for name in containers.names:
            containers.healthy(name)
        yield containers
    finally:
        containers.close()
        drop_database(url)


def _curl(*args: str) -> Any:
    done = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_images_answer_a_question_with_the_docker_sandbox(stack: Containers) -> None:
    api = "http://127.0.0.1:8000"
    user = {"email": f"img-{os.getpid()}@example.com", "password": "correct horse battery"}
    body = ("-H", "Content-Type: application/json")
    _curl("-X", "POST", f"{api}/api/auth/register", *body, "-d", json.dumps(user))
    token = json.loads(_curl("-X", "POST", f"{api}/api/auth/login", *body, "-d", json.dumps(user)))
    auth = ("-H", f"Authorization: Bearer {token['access_token']}")
    csv = stack.data.parent / "census.csv"
    csv.write_text("education,income\nBS,45000\nMS,65000\nBS,55000\nPhD,80000\n")
    uploaded = json.loads(_curl("-X", "POST", f"{api}/api/datasets", *auth, "-F", f"file=@{csv}"))
    dataset = uploaded["data"][0]["id"]
    deadline = time.monotonic() + 120
    while json.loads(_curl(f"{api}/api/datasets/{dataset}", *auth))["status"] != "ready":
        assert time.monotonic() < deadline, "the worker image did not convert the upload"
        time.sleep(0.5)
    session = json.loads(_curl("-X", "POST", f"{api}/api/sessions", *auth, *body,
                               "-d", json.dumps({"dataset_ids": [dataset]})))  # fmt: skip
    asked = {"content": "average income by education"}
    run = json.loads(_curl("-X", "POST", f"{api}/api/sessions/{session['id']}/messages", *auth,
                           *body, "-d", json.dumps(asked)))  # fmt: skip
    events = _curl("-N", f"{api}/api/runs/{run['run_id']}/events", *auth)
    assert "event: done" in events, events[-2000:]
    assert '"succeeded"' in events, events[-2000:]
    assert "80000" in events  # the PhD row: computed in a runner container
    executions = json.loads(_curl(f"{api}/api/sessions/{session['id']}/executions", *auth))["data"]
    assert executions
    assert {e["backend"] for e in executions} == {"docker"}
    assert _curl("-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8501/") == "200"


def test_the_ui_image_imports_every_page(engine: None) -> None:
    """Streamlit runs a page only when a browser opens it: a library the slim UI image lacks
    would pass the health check, so import every module of the UI here. (`frontend/app.py`
    is the script Streamlit runs, not a module: it imports nothing these do not, and the
    browser test runs it.)"""
    script = (
        "import importlib, pkgutil, frontend.views as views\n"
        "names = ['frontend.server', 'frontend.browser', 'frontend.client', 'frontend.render',\n"
        "         'frontend.state', 'frontend.seed'] + [f'frontend.views.{m.name}' for m in\n"
        "         pkgutil.iter_modules(views.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))"
    )
    done = _docker("run", "--rm", *LOCKED, IMAGES["frontend"], "python", "-c", script)
    assert done.splitlines()[-1] == "11"
