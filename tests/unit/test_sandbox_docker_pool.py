"""The docker backend's pool of containers started ahead of their jobs, against a scripted
engine (no Docker engine runs in this lane; `make bench-sandbox --docker` and
tests/e2e/test_sandbox_engines.py run the same code on a real one).

What a user relies on: a pooled container sees none of the data before its job arrives
and exactly the job's files after; the job's limits, deadline and cancel hold as on the
cold path; a job the pool cannot serve still runs (cold); nothing is left behind."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError

from tests.unit.test_sandbox_docker import (
    GOOD,
    LIMITS,
    Clock,
    FakeContainer,
    FakeContainers,
    FakeDockerClient,
    FakeSocket,
    a_job,
    frame,
    make_backend,
    make_data_dir,
)
from worker.sandbox.docker import POOL_LABEL, DockerBackend
from worker.sandbox.docker_pool import READY_LINE, SLOTS_DIR

READY = frame(READY_LINE, stream=2)
BROKEN = frame(b"Traceback: ImportError\n", stream=2)  # a runner that fails to start


def answer(result: dict[str, Any]) -> bytes:
    """A `--warm` runner's result on stdout: its length in bytes on a line, then it."""
    data = json.dumps(result).encode()
    return frame(b"%d\n" % len(data) + data)


class RoutedContainers(FakeContainers):
    """Pooled containers (created with `--warm`) come from their own script, so a refill
    racing a job's cold path never takes the container scripted for the other."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(events)
        self.warm: list[Any] = []
        self.leftovers: list[FakeContainer] = []
        self.listed: list[dict[str, Any]] = []

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[Any]:
        self.listed.append({"all": all, **(filters or {})})
        return list(self.leftovers)

    def create(self, **options: Any) -> FakeContainer:
        if "--warm" not in options["entrypoint"]:
            return super().create(**options)
        self.events.append("create")
        self.created.append(options)
        if not self.warm:
            raise APIError("no more pooled containers scripted")
        return self.warm.pop(0)  # type: ignore[no-any-return]


@pytest.fixture
def client() -> FakeDockerClient:
    made = FakeDockerClient()
    made.containers = RoutedContainers(made.events)
    return made


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_data_dir(tmp_path)


def pooled(client: FakeDockerClient, answers: list[list[Any]]) -> list[FakeContainer]:
    """Script pooled containers, in the order they are created: each says it is ready (the
    first chunk of `answer` unless it is given), then gives its answer. (The fake
    containers share one event list: the client's.)"""
    made = [
        FakeContainer(
            client.events, FakeSocket(answer if answer[:1] == [BROKEN] else [READY, *answer])
        )
        for answer in answers
    ]
    assert isinstance(client.containers, RoutedContainers)
    client.containers.warm.extend(made)
    return made


def wait_ready(backend: DockerBackend, count: int = 1) -> None:
    assert backend._pool is not None
    backend._pool.start()
    for _ in range(500):
        if backend._pool.stats()["pool_ready"] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"pool never had {count} ready: {backend._pool.stats()}")


def test_a_pooled_container_sees_nothing_until_its_job_then_exactly_its_files(
    client: FakeDockerClient, data_dir: Path
) -> None:
    # the result arrives in two frames, and the stream never ends: the length says it is whole
    whole = answer(GOOD)
    first, _spare = pooled(client, [[whole[:20], whole[20:], TimeoutError("never ends")], []])
    backend = make_backend(client, Clock(), data_dir, pool_size=1)
    seen_at_handoff: list[list[str]] = []
    try:
        wait_ready(backend)
        options = client.containers.created[0]
        assert options["entrypoint"] == ["python", "-m", "runner", "--warm"]
        assert options["labels"][POOL_LABEL] == "true"
        assert options["network_mode"] == "none"
        [mount] = options["mounts"]
        slot = Path(mount["Source"])
        assert mount["Target"] == "/job"
        assert mount["ReadOnly"] is True
        assert slot.parent == data_dir.resolve() / SLOTS_DIR
        assert list(slot.iterdir()) == []  # started, warm, and sees no data at all

        first.stdin.on_send = lambda: seen_at_handoff.append(sorted(os.listdir(slot)))
        result = backend.run(a_job(data_dir))
        stats = backend.health()
    finally:
        backend.close()

    assert result["result"] == "42"
    assert stats["pool_jobs"] == {"ready": 1, "waited": 0, "none": 0}
    assert seen_at_handoff == [["dataset-0", "workspace-0"]]  # linked before the job went in
    job = json.loads(first.stdin.sent)
    assert [d["path"] for d in job["datasets"]] == ["/job/dataset-0"]
    assert [w["path"] for w in job["workspace"]] == ["/job/workspace-0"]
    assert not any(isinstance(e, tuple) and e[0] == "wait" for e in first.events)  # no round trip
    for _ in range(200):  # removed off the run's time, slot and all
        if first.removed and not slot.exists():
            break
        time.sleep(0.01)
    assert first.removed
    assert not slot.exists()
    assert (data_dir / "users/u1/sales.arrow").read_bytes() == b"ARROW1"  # a link, not a move


def test_a_job_with_other_limits_or_unlinkable_files_runs_cold(
    client: FakeDockerClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled(client, [[]])
    backend = make_backend(client, Clock(), data_dir, pool_size=1)
    try:
        wait_ready(backend)
        cold = client.container([frame(json.dumps(GOOD).encode())])
        bigger = {**a_job(data_dir), "limits": {"memory_mb": LIMITS["memory_mb"] * 2}}
        assert backend.run(bigger)["result"] == "42"
        assert client.containers.created[-1]["entrypoint"] == ["python", "-m", "runner"]
        assert cold.removed == 1

        def cross_device(*_args: Any, **_kwargs: Any) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "link", cross_device)
        client.container([frame(json.dumps(GOOD).encode())])
        assert backend.run(a_job(data_dir))["result"] == "42"
        assert client.containers.created[-1]["entrypoint"] == ["python", "-m", "runner"]
        assert backend.health()["pool_ready"] == 1  # the pooled one went back, unused
    finally:
        backend.close()


def test_a_runner_that_never_gets_ready_leaves_jobs_to_the_cold_path(
    client: FakeDockerClient, data_dir: Path
) -> None:
    [broken] = pooled(client, [[BROKEN]])
    backend = make_backend(client, Clock(), data_dir, pool_size=1, pool_wait_s=0.5)
    try:
        assert backend._pool is not None
        backend._pool.start()
        for _ in range(500):
            if backend._pool.last_error:
                break
            time.sleep(0.01)
        assert "did not say it was ready (Traceback: ImportError" in str(backend._pool.last_error)
        assert broken.removed == 1
        client.container([frame(json.dumps(GOOD).encode())])
        result = backend.run(a_job(data_dir))
        assert result["result"] == "42"
        assert "pool_last_error" in backend.health()
        assert backend.health()["pool_jobs"]["none"] == 1
    finally:
        backend.close()
    assert os.listdir(data_dir / SLOTS_DIR) == []


def one_pooled_job(client: FakeDockerClient, data_dir: Path) -> dict[str, Any]:
    """One job through a pool of one (its first scripted container)."""
    backend = make_backend(client, Clock(), data_dir, pool_size=1)
    try:
        wait_ready(backend)
        return backend.run(a_job(data_dir))
    finally:
        backend.close()


def test_a_pooled_snippet_past_its_deadline_is_killed(
    client: FakeDockerClient, data_dir: Path
) -> None:
    [container, _spare] = pooled(client, [[TimeoutError("timed out")], []])
    result = one_pooled_job(client, data_dir)
    assert result["error"]["type"] == "TimeoutError"
    assert "5 s" in result["error"]["message"]
    assert container.output.timeouts[-1] == 7.0  # timeout_s + kill grace: no start-up
    assert "kill" in container.events


def test_a_pooled_container_that_dies_for_memory_says_so(
    client: FakeDockerClient, data_dir: Path
) -> None:
    """Killed while writing its result: the frame is cut short, the engine says OOM."""
    [container, _spare] = pooled(client, [[frame(b'900\n{"ok": tr')], []])
    container.oom = True
    container.exit_code = 137
    result = one_pooled_job(client, data_dir)
    assert result["error"]["type"] == "MemoryError"
    assert "256 MB" in result["error"]["message"]


def test_terminate_stops_a_pooled_snippet_and_close_removes_the_rest(
    client: FakeDockerClient, data_dir: Path
) -> None:
    [running, *spares] = pooled(client, [[], [], [], []])
    backend = make_backend(client, Clock(), data_dir, pool_size=2)
    stopped: list[int] = []
    running.output.on_recv = lambda: (
        stopped.append(backend.terminate()) if running.stdin.sent and not stopped else None
    )
    wait_ready(backend, 2)
    result = backend.run(a_job(data_dir))
    assert stopped == [1]
    assert result["error"]["type"] == "Cancelled"
    assert "kill" in running.events
    wait_ready(backend, 2)  # refilled
    backend.close()
    assert len(client.containers.created) == 3  # two, then one in place of the used one
    made = [running, *spares][:3]
    assert all(c.removed for c in made)
    assert os.listdir(data_dir / SLOTS_DIR) == []


def test_containers_past_their_age_are_replaced(client: FakeDockerClient, data_dir: Path) -> None:
    clock = Clock()
    old, new = pooled(client, [[], []])
    backend = make_backend(client, clock, data_dir, pool_size=1, pool_max_age_s=60)
    try:
        wait_ready(backend)
        clock.now += 61
        assert backend._pool is not None
        with backend._pool._changed:
            backend._pool._changed.notify_all()
        for _ in range(500):
            if old.removed and len(client.containers.created) == 2:
                break
            time.sleep(0.01)
        assert old.removed == 1
        wait_ready(backend)
        assert backend._pool._ready[0].container is new
    finally:
        backend.close()


def test_jobs_at_once_each_get_their_own_container(
    client: FakeDockerClient, data_dir: Path
) -> None:
    answers = [[answer({**GOOD, "result": str(n)})] for n in range(4)]
    pooled(client, [*answers, [], [], []])
    backend = make_backend(client, Clock(), data_dir, pool_size=4, pool_wait_s=5)
    results: list[str] = []
    try:
        wait_ready(backend, 4)
        threads = [
            threading.Thread(target=lambda: results.append(backend.run(a_job(data_dir))["result"]))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        backend.close()
    assert sorted(results) == ["0", "1", "2", "3"]


def test_a_starting_pool_removes_what_a_killed_worker_left(
    client: FakeDockerClient, data_dir: Path
) -> None:
    """A worker killed with -9: its pooled containers read an empty job, exit, and stay
    (a live worker removes its own). The next pool removes those that ended over a minute
    ago, and leaves one that ended moments ago to the worker it may belong to."""
    now = datetime.now(UTC)
    old, recent = (FakeContainer(client.events, FakeSocket()) for _ in range(2))
    engine_time = "%Y-%m-%dT%H:%M:%S.%f123Z"  # as the engine writes it: nanoseconds, Z
    old.attrs = {"State": {"FinishedAt": (now - timedelta(minutes=5)).strftime(engine_time)}}
    recent.attrs = {"State": {"FinishedAt": (now - timedelta(seconds=5)).strftime(engine_time)}}
    assert isinstance(client.containers, RoutedContainers)
    client.containers.leftovers = [old, recent]
    pooled(client, [[]])
    backend = make_backend(client, Clock(), data_dir, pool_size=1)
    try:
        wait_ready(backend)
    finally:
        backend.close()
    assert client.containers.listed == [{"all": True, "label": POOL_LABEL, "status": "exited"}]
    assert old.removed == 1
    assert recent.removed == 0


def test_a_pooled_container_that_ended_while_waiting_is_not_given_a_job(
    client: FakeDockerClient, data_dir: Path
) -> None:
    """The engine restarted, or someone killed it: a job given to it would fail without
    having run. It is discarded and the job goes to the next ready container."""
    dead, alive = pooled(client, [[], [answer(GOOD)]])
    backend = make_backend(client, Clock(), data_dir, pool_size=2)
    try:
        wait_ready(backend, 2)
        dead.output.ended = True
        result = backend.run(a_job(data_dir))
    finally:
        backend.close()
    assert result["result"] == "42"
    assert dead.stdin.sent == b""  # never handed a job
    assert json.loads(alive.stdin.sent)["code"] == "2 * 21"
    assert dead.removed == 1
