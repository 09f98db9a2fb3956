"""The compose stack's Docker socket proxy (compose/docker-proxy.cfg), run for real: HAProxy
with that very file, in front of a stand-in for the engine's socket that records what
reaches it. (No Docker engine in this lane: the stand-in answers 200 to whatever it gets;
the allow-list is HAProxy's, and that is what is under test.)

Refused requests are the ones that turn a container-starting client into a host-owning one
or reach beyond the sandbox's own calls: exec (the technique behind most socket-proxy
escapes: create an exec in a running container, start it), copying files in or out
(`archive`), pulling or loading images, and path tricks (encoded slashes, `..`)."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "compose" / "docker-proxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

pytestmark = pytest.mark.skipif(
    not os.path.exists(HAPROXY), reason="HAProxy is not installed (.ci/run installs it)"
)

ALLOWED = [
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/version"),
    ("GET", "/v1.45/version"),
    ("POST", "/v1.45/containers/create"),
    ("POST", "/v1.41/containers/create?name=quarry-sandbox"),
    ("GET", "/v1.45/containers/json?filters=%7B%22label%22%3A%5B%22quarry.dev%2Fsandbox%22%5D%7D"),
    ("GET", "/v1.45/containers/3f2a9c/json"),
    ("POST", "/v1.45/containers/3f2a9c/attach?stdout=1&stderr=1&stream=1"),
    ("POST", "/v1.45/containers/3f2a9c/start"),
    ("POST", "/v1.45/containers/3f2a9c/wait"),
    ("POST", "/v1.45/containers/3f2a9c/kill"),
    ("DELETE", "/v1.45/containers/3f2a9c?force=True"),
    ("GET", "/v1.45/images/quarry-runner:latest/json"),
    ("GET", "/v1.45/images/registry.example:5000/team/quarry-runner:1.2/json"),
]

REFUSED = [
    ("POST", "/v1.45/containers/3f2a9c/exec"),  # create an exec in a running container
    ("POST", "/v1.45/exec/9e1b/start"),  # and run it
    ("PUT", "/v1.45/containers/3f2a9c/archive?path=/etc"),  # copy files into a container
    ("GET", "/v1.45/containers/3f2a9c/archive?path=/job"),  # or out of one
    ("HEAD", "/v1.45/containers/3f2a9c/archive?path=/job"),
    ("GET", "/v1.45/containers/3f2a9c/export"),
    ("GET", "/v1.45/containers/3f2a9c/logs?stdout=1"),
    ("POST", "/v1.45/containers/3f2a9c/update"),
    ("POST", "/v1.45/containers/3f2a9c/rename?name=x"),
    ("POST", "/v1.45/containers/3f2a9c/restart"),
    ("POST", "/v1.45/containers/prune"),
    ("POST", "/v1.45/commit?container=3f2a9c"),
    ("POST", "/v1.45/images/create?fromImage=alpine"),  # pull anything
    ("POST", "/v1.45/images/load"),
    ("DELETE", "/v1.45/images/quarry-runner:latest"),
    ("POST", "/v1.45/images/quarry-runner/push"),
    ("POST", "/v1.45/build"),
    ("GET", "/v1.45/info"),
    ("GET", "/v1.45/events"),
    ("POST", "/v1.45/volumes/create"),
    ("POST", "/v1.45/networks/create"),
    ("POST", "/v1.45/networks/bridge/connect"),
    ("POST", "/v1.45/swarm/init"),
    ("POST", "/v1.45/plugins/pull"),
    ("POST", "/v1.45/session"),
    ("GET", "/v1.45/system/df"),
    ("GET", "/v1.45/distribution/alpine/json"),
    ("POST", "/v1.45/containers/create/../3f2a9c/exec"),  # dot segments
    ("POST", "/v1.45/containers/3f2a9c%2Fexec"),  # an encoded slash
    ("POST", "/v1.45/containers/..%2Fexec"),
    ("POST", "/v1.45/containers/3f2a9c%252Fexec"),  # encoded twice
    ("POST", "/v1.45/containers/3f2a9c/start/"),  # a trailing slash
    ("GET", "/v1.45/containers/create"),  # a right path, a wrong method
    ("DELETE", "/v1.45/containers/3f2a9c/exec"),
]


class _Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _recorder(seen: list[tuple[str, str]]) -> type[BaseHTTPRequestHandler]:
    class Recorder(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append((self.command, self.path))
            body = b'{"reached": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815

        def address_string(self) -> str:  # a Unix socket has no client address
            return "haproxy"

        def log_message(self, *_args: object) -> None:
            pass

    return Recorder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    folder = tmp_path_factory.mktemp("proxy")
    engine_socket = folder / "docker.sock"
    seen: list[tuple[str, str]] = []
    engine = _Engine(str(engine_socket), _recorder(seen))
    threading.Thread(target=engine.serve_forever, daemon=True).start()
    port = _free_port()
    text = CONFIG.read_text()
    assert "bind :2375" in text
    assert "server dockerd /var/run/docker.sock" in text
    text = text.replace("bind :2375", f"bind 127.0.0.1:{port}")
    text = text.replace("/var/run/docker.sock", str(engine_socket))
    (folder / "haproxy.cfg").write_text(text)
    checked = subprocess.run(
        [HAPROXY, "-c", "-q", "-f", str(folder / "haproxy.cfg")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(folder / "haproxy.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port, seen
    finally:
        process.terminate()
        process.wait(10)
        engine.shutdown()
        engine.server_close()


def _ask(port: int, method: str, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize(("method", "path"), ALLOWED)
def test_the_calls_the_sandbox_backend_makes_reach_the_engine(
    proxy: tuple[int, list[tuple[str, str]]], method: str, path: str
) -> None:
    port, seen = proxy
    assert _ask(port, method, path) == 200
    assert (method, path) in seen


@pytest.mark.parametrize(("method", "path"), REFUSED)
def test_everything_else_is_refused_before_the_engine(
    proxy: tuple[int, list[tuple[str, str]]], method: str, path: str
) -> None:
    port, seen = proxy
    before = len(seen)
    assert _ask(port, method, path) == 403
    assert len(seen) == before  # the engine never saw it
