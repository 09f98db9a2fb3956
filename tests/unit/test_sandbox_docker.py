"""The docker sandbox backend, without a Docker engine.

No Docker engine runs on the machines these tests run on, so the backend is driven through
a FAKE docker client that records every call and answers from a script: the tests assert
the exact container options the backend sends (and that the docker SDK turns them into the
API body we mean), that the job goes to stdin, that the container is killed at the deadline
and removed whatever happens, and how exit codes map to failures. The real-engine lane is
tests/e2e/test_sandbox_engines.py.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import _create_container_args
from docker.types import ContainerConfig, LogConfig, Mount, Ulimit

from api.config import Settings
from worker.sandbox import SandboxUnavailable, get_backend, seccomp
from worker.sandbox.docker import (
    SECCOMP_PROFILE,
    DockerBackend,
    DockerConfig,
    container_options,
    plan_files,
)

GOOD = {"ok": True, "stdout": "hi\n", "error": None, "result": "42", "tables": [], "figures": []}
LIMITS = {"timeout_s": 5, "memory_mb": 256, "max_output_bytes": 1 << 20}


def frame(data: bytes, stream: int = 1) -> bytes:
    """One frame of Docker's multiplexed attach stream (1 = stdout, 2 = stderr)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeSocket:
    """One attach connection: records what is written; `recv` hands out scripted chunks
    (an exception in the script is raised), then end of stream."""

    def __init__(
        self, chunks: list[Any] | None = None, on_recv: Callable[[], None] | None = None
    ) -> None:
        self.chunks = list(chunks or [])
        self.sent = b""
        self.timeouts: list[float] = []
        self.shutdown_how: int | None = None
        self.closed = False
        self.on_recv = on_recv
        self.on_send: Callable[[], None] | None = None
        self.ended = False  # the container behind it has gone (what a peek sees)
        self.send_error: Exception | None = None

    def settimeout(self, value: float) -> None:
        self.timeouts.append(value)

    def sendall(self, data: bytes) -> None:
        if self.on_send is not None:
            self.on_send()
        if self.send_error is not None:
            raise self.send_error
        self.sent += data

    def recv(self, _size: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_PEEK:  # is anything waiting: a live, silent runner says no
            if self.ended:
                return b""
            raise BlockingIOError("nothing to read")
        if self.on_recv is not None:
            self.on_recv()
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        return bytes(chunk)

    def shutdown(self, how: int) -> None:
        self.shutdown_how = how

    def close(self) -> None:
        self.closed = True


class FakeContainer:
    def __init__(
        self,
        events: list[Any],
        output: FakeSocket,
        exit_code: int = 0,
        oom: bool = False,
        start_error: Exception | None = None,
        wait_error: BaseException | None = None,
    ) -> None:
        self.id = "c0ffee"
        self.events = events
        self.output = output
        self.stdin = FakeSocket()
        self.exit_code = exit_code
        self.oom = oom
        self.start_error = start_error
        self.wait_error = wait_error
        self.attrs: dict[str, Any] = {}
        self.removed = 0

    def attach_socket(self, params: dict[str, int]) -> FakeSocket:
        self.events.append(("attach", dict(params)))
        return self.stdin if params.get("stdin") else self.output

    def start(self) -> None:
        self.events.append("start")
        if self.start_error is not None:
            raise self.start_error

    def wait(self, timeout: float) -> dict[str, Any]:
        self.events.append(("wait", timeout))
        if self.wait_error is not None:
            raise self.wait_error
        return {"StatusCode": self.exit_code}

    def reload(self) -> None:
        self.attrs = {"State": {"OOMKilled": self.oom, "ExitCode": self.exit_code}}

    def kill(self) -> None:
        self.events.append("kill")

    def remove(self, force: bool = False) -> None:
        self.events.append(("remove", force))
        self.removed += 1
        if self.removed > 1:
            raise NotFound("already removed")


class FakeContainers:
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.created: list[dict[str, Any]] = []
        self.script: list[Any] = []

    def create(self, **options: Any) -> FakeContainer:
        self.events.append("create")
        self.created.append(options)
        answer = self.script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[no-any-return]


class FakeImages:
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.pull_error: Exception | None = None
        self.present = True

    def pull(self, image: str) -> None:
        self.events.append(("pull", image))
        if self.pull_error is not None:
            raise self.pull_error

    def get(self, image: str) -> object:
        if not self.present:
            raise ImageNotFound(f"no such image: {image}")
        return object()


class FakeDockerClient:
    """Stands in for `docker.DockerClient`: no Docker engine runs here."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.containers = FakeContainers(self.events)
        self.images = FakeImages(self.events)
        self.ping_error: Exception | None = None
        self.closed = False

    def ping(self) -> bool:
        if self.ping_error is not None:
            raise self.ping_error
        return True

    def close(self) -> None:
        self.closed = True

    def container(self, chunks: list[Any] | None = None, **kwargs: Any) -> FakeContainer:
        """Script the next `containers.create` answer."""
        made = FakeContainer(self.events, FakeSocket(chunks), **kwargs)
        self.containers.script.append(made)
        return made


def make_data_dir(tmp_path: Path) -> Path:
    """A data directory holding one user's dataset and workspace file."""
    root = tmp_path / "data"
    (root / "users" / "u1").mkdir(parents=True)
    (root / "users" / "u1" / "sales.arrow").write_bytes(b"ARROW1")
    (root / "users" / "u1" / "young.json").write_text("[1, 2]")
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path)


@pytest.fixture
def client() -> FakeDockerClient:
    return FakeDockerClient()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_backend(
    client: FakeDockerClient, clock: Clock, data_dir: Path, **config: Any
) -> DockerBackend:
    defaults: dict[str, Any] = {
        "image": "quarry-runner:test",
        "cpus": 1.5,
        "max_processes": 32,
        "data_dir": str(data_dir),
        "start_grace_s": 10.0,
        "limits": LIMITS,
    }
    return DockerBackend(client, DockerConfig(**{**defaults, **config}), clock=clock)  # type: ignore[arg-type]


def a_job(data_dir: Path, code: str = "2 * 21") -> dict[str, Any]:
    return {
        "code": code,
        "datasets": [
            {"name": "df", "path": str(data_dir / "users/u1/sales.arrow"), "format": "arrow"}
        ],
        "workspace": [
            {"name": "young", "path": str(data_dir / "users/u1/young.json"), "kind": "value"}
        ],
    }


def test_the_container_gets_exactly_these_options(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container([frame(json.dumps(GOOD).encode())])
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert client.containers.created == [
        {
            "image": "quarry-runner:test",
            "entrypoint": ["python", "-m", "runner"],
            "stdin_open": True,
            "tty": False,
            "user": "10001:10001",
            "working_dir": "/tmp",
            "hostname": "sandbox",
            "environment": {
                "HOME": "/tmp",
                "OMP_NUM_THREADS": "2",
                "OPENBLAS_NUM_THREADS": "2",
                "MKL_NUM_THREADS": "2",
            },
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
            "mem_limit": 256 << 20,
            "memswap_limit": 256 << 20,
            "nano_cpus": 1_500_000_000,
            "pids_limit": 32,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges", f"seccomp={SECCOMP_PROFILE}"],
            "ipc_mode": "private",
            "oom_score_adj": 1000,
            "ulimits": [
                Ulimit(name="nofile", soft=1024, hard=1024),
                Ulimit(name="core", soft=0, hard=0),
            ],
            "log_config": LogConfig(type="none"),
            "labels": {"app.kubernetes.io/component": "sandbox", "quarry.dev/sandbox": "true"},
            "mounts": [
                Mount(
                    target="/job/dataset-0",
                    source=str(data_dir / "users/u1/sales.arrow"),
                    type="bind",
                    read_only=True,
                ),
                Mount(
                    target="/job/workspace-0",
                    source=str(data_dir / "users/u1/young.json"),
                    type="bind",
                    read_only=True,
                ),
            ],
        }
    ]


def test_the_sdk_turns_the_options_into_the_api_body_we_mean(data_dir: Path) -> None:
    """What the engine receives (the SDK's own conversion, no engine involved)."""
    _, files = plan_files(a_job(data_dir), str(data_dir))
    options = container_options(DockerConfig(runtime="runsc"), LIMITS, files)
    # As `containers.create(**options)` calls it (it adds `command=None`).
    arguments = _create_container_args({"command": None, **options, "version": "1.41"})
    body = ContainerConfig("1.41", **arguments)
    host = body["HostConfig"]

    assert body["User"] == "10001:10001"
    assert (body["OpenStdin"], body["StdinOnce"], body["Tty"]) == (True, True, False)
    assert body["Entrypoint"] == ["python", "-m", "runner"]
    assert body["Cmd"] is None
    assert sorted(body["Env"]) == sorted(
        ["HOME=/tmp", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1"]
    )
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=64m"}
    assert host["Memory"] == host["MemorySwap"] == 256 << 20
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 64
    assert host["CapDrop"] == ["ALL"]
    no_new_privileges, profile = host["SecurityOpt"]
    assert no_new_privileges == "no-new-privileges"
    # the sandbox's system-call policy, as the engine takes it (the JSON, not a path)
    assert json.loads(profile.removeprefix("seccomp=")) == seccomp.docker_profile()
    assert host["LogConfig"] == {"Type": "none", "Config": {}}
    assert host["Runtime"] == "runsc"
    assert "Binds" not in host
    assert "Privileged" not in host
    assert "CapAdd" not in host
    assert [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in host["Mounts"]] == [
        (str(data_dir / "users/u1/sales.arrow"), "/job/dataset-0", "bind", True),
        (str(data_dir / "users/u1/young.json"), "/job/workspace-0", "bind", True),
    ]


def test_the_job_goes_to_stdin_with_the_in_container_paths(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    container = client.container([frame(json.dumps(GOOD).encode())])
    make_backend(client, clock, data_dir).run(a_job(data_dir))

    sent = json.loads(container.stdin.sent)
    assert sent["code"] == "2 * 21"
    assert sent["datasets"] == [{"name": "df", "path": "/job/dataset-0", "format": "arrow"}]
    assert sent["workspace"] == [{"name": "young", "path": "/job/workspace-0", "kind": "value"}]
    assert sent["limits"] == LIMITS
    assert str(data_dir) not in container.stdin.sent.decode()  # no host path reaches it
    # The stdin connection is closed once written (EOF for the runner); the output one was
    # attached before the container started, so nothing it wrote can be missed.
    assert container.stdin.shutdown_how is not None
    assert container.stdin.closed
    assert container.output.closed
    assert client.events == [
        "create",
        ("attach", {"stdout": 1, "stderr": 1, "stream": 1}),
        "start",
        ("attach", {"stdin": 1, "stream": 1}),
        ("wait", 15.0),
        ("remove", True),
    ]


def test_the_result_is_read_from_the_demultiplexed_stdout(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    payload = frame(b"warning: on stderr\n", 2) + frame(json.dumps(GOOD).encode())
    # Chunks that cut frames (and their headers) anywhere.
    client.container([payload[:3], payload[3:30], payload[30:31], payload[31:]])
    clock_steps = iter([0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])

    def tick() -> None:
        clock.now += next(clock_steps, 0.0)

    client.containers.script[0].output.on_recv = tick
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert result["result"] == "42"
    assert result["duration_ms"] == 2000


def test_the_deadline_kills_and_removes_the_container(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    container = client.container([TimeoutError("timed out")])
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["ok"] is False
    assert result["error"]["type"] == "TimeoutError"
    assert "5 s" in result["error"]["message"]
    assert container.output.timeouts == [15.0]  # timeout_s + start grace
    assert client.events[-2:] == ["kill", ("remove", True)]


def test_a_deadline_passed_between_chunks_also_stops_it(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    container = client.container([frame(b"{")] * 3)

    def slow() -> None:
        clock.now += 8

    container.output.on_recv = slow
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "TimeoutError"
    assert client.events[-2:] == ["kill", ("remove", True)]


def test_a_container_that_does_not_end_is_a_timeout(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container(
        [frame(json.dumps(GOOD).encode())],
        wait_error=requests.exceptions.ReadTimeout("read timed out"),
    )
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "TimeoutError"
    assert client.events[-2:] == ["kill", ("remove", True)]


def test_output_over_the_cap_kills_it(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    flood = frame(b"x" * (64 << 10))
    container = client.container([flood] * 40)
    result = make_backend(
        client, clock, data_dir, limits={**LIMITS, "max_output_bytes": 1 << 20}
    ).run(a_job(data_dir))

    assert result["error"]["type"] == "OutputTooLarge"
    assert str(1 << 20) in result["error"]["message"]
    assert client.events[-2:] == ["kill", ("remove", True)]
    # It stopped reading soon after the cap, not at the end of the flood.
    assert len(container.output.chunks) > 20


def test_out_of_memory_is_reported_as_such(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container([], exit_code=137, oom=True)
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "MemoryError"
    assert "256 MB" in result["error"]["message"]
    assert client.events[-1] == ("remove", True)


def test_killed_by_sigkill_without_the_oom_flag_is_memory_too(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    """cgroup v2 may kill the runner without flagging the container OOMKilled."""
    client.container([], exit_code=137, oom=False)
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "MemoryError"


def test_a_crash_without_output_says_so(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container([frame(b"Traceback...\n", 2)], exit_code=1)
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "SandboxCrashed"
    assert "exit code 1" in result["error"]["message"]


def test_unreadable_output_is_a_failure_not_an_exception(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container([frame(b"not json")])
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "SandboxError"


def test_a_runner_that_stops_reading_stdin_still_gives_its_answer(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    answer = b'{"ok": false, "error": {"type": "JobError", "message": "x", "line": null}}'
    container = client.container([frame(answer)])
    container.stdin.send_error = BrokenPipeError("broken pipe")
    container.exit_code = 2
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "JobError"
    assert client.events[-1] == ("remove", True)


def test_a_broken_output_connection_ends_the_read(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container([ConnectionResetError("reset")], exit_code=1)
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["error"]["type"] == "SandboxCrashed"
    assert client.events[-1] == ("remove", True)


def test_the_container_is_removed_when_it_cannot_start(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    container = client.container(start_error=APIError("cannot start: mount failed"))
    with pytest.raises(SandboxUnavailable, match="did not start"):
        make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert container.output.closed
    assert client.events[-1] == ("remove", True)


def test_the_container_is_removed_when_the_worker_is_interrupted(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    """A Celery soft time limit (or any exception) raised mid-run still removes it."""

    class SoftTimeLimitExceeded(Exception):
        pass

    client.container([frame(json.dumps(GOOD).encode())], wait_error=SoftTimeLimitExceeded())
    with pytest.raises(SoftTimeLimitExceeded):
        make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert client.events[-1] == ("remove", True)


def test_close_removes_a_container_still_running(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    backend = make_backend(client, clock, data_dir)
    container = client.container([frame(json.dumps(GOOD).encode())])
    container.output.on_recv = backend.close  # the worker shuts down mid-snippet

    backend.run(a_job(data_dir))

    assert container.removed == 2  # by close(), then (already gone: tolerated) by run()
    assert client.closed


def test_an_unreachable_engine_is_sandbox_unavailable(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.containers.script.append(requests.exceptions.ConnectionError("connection refused"))
    with pytest.raises(SandboxUnavailable, match="unreachable"):
        make_backend(client, clock, data_dir).run(a_job(data_dir))


def test_a_refusal_to_create_is_sandbox_unavailable(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.containers.script.append(APIError("invalid runtime name: runsc"))
    with pytest.raises(SandboxUnavailable, match="refused"):
        make_backend(client, clock, data_dir).run(a_job(data_dir))


def test_from_settings_with_no_engine_is_sandbox_unavailable(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        sandbox_backend="docker",
        sandbox_docker_url=f"unix://{tmp_path}/no-docker.sock",
    )
    with pytest.raises(SandboxUnavailable, match="Docker engine is unreachable"):
        get_backend(settings)


def test_from_settings_builds_the_client_and_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[dict[str, Any]] = []

    def fake_client(**kwargs: Any) -> FakeDockerClient:
        made.append(kwargs)
        return FakeDockerClient()

    monkeypatch.setattr("docker.DockerClient", fake_client)
    monkeypatch.setattr("docker.from_env", lambda: fake_client(from_env=True))
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "sandbox_image": "quarry-runner:9",
        "sandbox_cpus": 2.0,
        "sandbox_max_processes": 16,
        "sandbox_memory_mb": 300,
        "sandbox_timeout_s": 7,
    }
    backend = get_backend(Settings(_env_file=None, **values), "docker")  # type: ignore[call-arg]
    assert isinstance(backend, DockerBackend)
    assert made == [{"from_env": True}]
    assert backend.config == DockerConfig(
        image="quarry-runner:9",
        cpus=2.0,
        max_processes=16,
        data_dir=str(tmp_path),
        limits={"timeout_s": 7, "memory_mb": 300, "max_output_bytes": 8 << 20},
        pool_size=2,  # SANDBOX_MODE=warm, SANDBOX_POOL_SIZE=2: the defaults
    )
    backend.close()
    cold = {**values, "sandbox_mode": "cold", "sandbox_docker_pull": False}
    backend = get_backend(Settings(_env_file=None, **cold), "docker")  # type: ignore[call-arg]
    assert isinstance(backend, DockerBackend)
    assert backend.config.pool_size == 0
    assert backend.config.pull_missing is False

    backend.close()

    url = "tcp://docker.internal:2376"
    remote = Settings(_env_file=None, **cold, sandbox_docker_url=url)  # type: ignore[call-arg]
    get_backend(remote, "docker").close()
    assert made[-1] == {"base_url": url}

    # compose: the worker's DATA_DIR is another path on the engine's host; gVisor
    values |= {
        "sandbox_docker_host_data_dir": "/srv/quarry/data",
        "sandbox_docker_runtime": "runsc",
    }
    backend = get_backend(Settings(_env_file=None, **values), "docker")  # type: ignore[call-arg]
    backend.close()
    assert isinstance(backend, DockerBackend)
    assert backend.config.host_data_dir == "/srv/quarry/data"
    assert backend.config.runtime == "runsc"


def test_a_missing_image_is_pulled_once(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.containers.script.append(ImageNotFound("no such image"))
    client.container([frame(json.dumps(GOOD).encode())])
    result = make_backend(client, clock, data_dir).run(a_job(data_dir))

    assert result["ok"] is True
    assert client.events[:3] == ["create", ("pull", "quarry-runner:test"), "create"]


def test_an_image_that_cannot_be_had_says_how_to_build_it(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.containers.script.append(ImageNotFound("no such image"))
    client.images.pull_error = APIError("pull access denied")
    with pytest.raises(SandboxUnavailable, match=r"docker build -f runner/Dockerfile"):
        make_backend(client, clock, data_dir).run(a_job(data_dir))

    client.containers.script.append(ImageNotFound("no such image"))
    with pytest.raises(SandboxUnavailable, match="not available"):
        make_backend(client, clock, data_dir, pull_missing=False).run(a_job(data_dir))


def test_files_outside_the_data_dir_are_refused(
    client: FakeDockerClient, clock: Clock, data_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    (data_dir / "users" / "u1" / "link.csv").symlink_to(secret)
    backend = make_backend(client, clock, data_dir)

    for path in (secret, data_dir / "users/u1/../../../secret.csv", data_dir / "users/u1/link.csv"):
        job = {"code": "1", "datasets": [{"name": "df", "path": str(path), "format": "csv"}]}
        result = backend.run(job)
        assert result["error"]["type"] == "JobError", path
    missing = {"code": "1", "datasets": [{"name": "df", "path": str(data_dir / "nope.csv")}]}
    assert backend.run(missing)["error"]["message"].endswith("df: no such file")
    assert client.containers.created == []


def test_a_job_without_files_mounts_nothing(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    client.container([frame(json.dumps(GOOD).encode())])
    make_backend(client, clock, data_dir).run({"code": "1"})

    assert client.containers.created[0]["mounts"] == []


def test_bind_sources_are_translated_to_the_engine_host(data_dir: Path) -> None:
    """A worker in a container sees the data dir at one path, the engine at another."""
    _, files = plan_files(a_job(data_dir), str(data_dir), host_data_dir="/srv/quarry/data")

    assert files == [
        ("/srv/quarry/data/users/u1/sales.arrow", "/job/dataset-0"),
        ("/srv/quarry/data/users/u1/young.json", "/job/workspace-0"),
    ]


def test_health_pings_the_engine(client: FakeDockerClient, clock: Clock, data_dir: Path) -> None:
    backend = make_backend(client, clock, data_dir)
    assert backend.health() == {
        "backend": "docker",
        "image": "quarry-runner:test",
        "ok": True,
        "image_present": True,
    }
    client.images.present = False
    assert backend.health()["image_present"] is False
    client.ping_error = requests.exceptions.ConnectionError("refused")
    health = backend.health()
    assert health["ok"] is False
    assert "unreachable" in health["error"]


def test_terminate_kills_the_running_container_and_its_run_says_cancelled(
    client: FakeDockerClient, clock: Clock, data_dir: Path
) -> None:
    """(Fake engine.) A user stops the run while the snippet runs: the container is
    killed (exit 137, no output) and run() reports Cancelled, not a memory failure."""
    stopped: list[int] = []
    backend = make_backend(client, clock, data_dir)
    container = client.container([], exit_code=137)
    container.output.on_recv = lambda: stopped.append(backend.terminate()) if not stopped else None

    result = backend.run(a_job(data_dir))

    assert stopped == [1]
    assert result["error"]["type"] == "Cancelled"
    assert "kill" in container.events
    assert ("remove", True) in container.events
    assert backend.terminate() == 0
