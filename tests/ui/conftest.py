"""The UI's tests run against real processes: the API under uvicorn (real HTTP and SSE) and
a Celery worker (conversions and turns with the offline model), on the test PostgreSQL and
Redis. The Streamlit pages themselves run in AppTest (tests/ui/test_pages.py) or in
Chromium (tests/e2e/test_ui_browser.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from tests.conftest import REDIS_URL
from tests.test_agent_integration import ROOT, Stack, _free_port


class Servers:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None

    def start(self) -> Servers:
        command = [
            sys.executable, "-m", "uvicorn", "api.main:app",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
        ]  # fmt: skip
        self.api = subprocess.Popen(
            command, cwd=ROOT, env=self.stack.env(), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.stack.start_worker(beat=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the API did not start")
            time.sleep(0.2)

    def close(self) -> None:
        if self.api is not None:
            os.killpg(self.api.pid, signal.SIGTERM)
            self.api.wait(timeout=30)
        self.stack.close()


@pytest.fixture(scope="module")
def servers(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    stack = Stack(pg_url, REDIS_URL, tmp_path_factory.mktemp("ui") / "data")
    found = Servers(stack).start()
    yield found
    found.close()


@pytest.fixture
def api_url(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QUARRY_API_URL", servers.url)
    return servers.url
