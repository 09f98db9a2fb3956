"""The docker backend: one fresh, single-use container per snippet.

The container runs the runner image (runner/Dockerfile) as `python -m runner`, with no
network, a read-only root filesystem, a small noexec tmpfs `/tmp`, memory = memory+swap,
a CPU quota, a pids limit, every capability dropped, `no-new-privileges`, a non-root user,
no log driver (a flood of output never reaches the host's disk) and, bind-mounted
read-only one by one, exactly the job's dataset and workspace files (the job it receives
names them by their in-container paths). The job goes to the runner's stdin over an
attach connection; the result comes back on another one, read up to the output cap
before the deadline. Whatever happens, the container is removed.

There is deliberately no pool of pre-started containers: a container's bind mounts are
fixed when it is created, so a container started before its job could only see the job's
files if it saw the whole data directory, which is what this backend must not do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount, Ulimit

from worker.sandbox import docker_stream as stream
from worker.sandbox import seccomp
from worker.sandbox.base import (
    JOB_DIR,
    KILL_GRACE_S,
    Backend,
    SandboxUnavailable,
    container_settings,
    ended_without_result,
    out_of_memory,
    parse_result,
    timed_out,
    too_large,
    with_limits,
)
from worker.sandbox.base import plan_files as plan_job_files
from worker.sandbox.docker_pool import SLOTS_DIR, Pool, Warm

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from api.config import Settings

log = logging.getLogger("quarry.sandbox.docker")

# The runner image's unprivileged user (runner/Dockerfile creates it with these ids).
RUNNER_USER = "10001:10001"
RUNNER_COMMAND = ["python", "-m", "runner"]
# The sandbox's system-call policy (worker/sandbox/seccomp.py), compact, as the engine takes it
SECCOMP_PROFILE = json.dumps(seccomp.docker_profile(), separators=(",", ":"))
# The container's own private, size-capped tmpfs (not the host's /tmp).
SANDBOX_TMP = "/tmp"  # noqa: S108
# Labels on every sandbox container, so an operator (or a reaper) can find leftovers.
CONTAINER_LABELS = {"app.kubernetes.io/component": "sandbox", "quarry.dev/sandbox": "true"}
POOL_LABEL = "quarry.dev/sandbox-pool"  # and this on a container started ahead of its job

_ENGINE_ERRORS = (DockerException, requests.exceptions.RequestException)


@dataclass(frozen=True)
class DockerConfig:
    image: str = "quarry-runner:latest"
    cpus: float = 1.0
    max_processes: int = 64
    tmp_mb: int = 64
    user: str = RUNNER_USER
    # Files given to a sandbox must lie under this directory (None: any regular file).
    data_dir: str | None = None
    # Where data_dir is on the Docker host, when the worker itself runs in a container
    # and sees it elsewhere (bind sources are paths on the engine's machine).
    host_data_dir: str | None = None
    # Container start and interpreter start-up, on top of the snippet's own timeout_s.
    start_grace_s: float = 10.0
    pull_missing: bool = True
    runtime: str | None = None  # e.g. "runsc" (gVisor) where the engine has it
    limits: dict[str, int] = field(default_factory=dict)
    # Containers started ahead of their jobs (worker/sandbox/docker_pool.py); 0: none. The
    # pool needs data_dir: its slots live there, beside the files they link.
    pool_size: int = 0
    pool_wait_s: float = 5.0  # how long a job waits for a warming container, else cold
    pool_max_age_s: float = 300.0
    pool_ready_timeout_s: float = 120.0


def plan_files(
    job: dict[str, Any], data_dir: str | None, host_data_dir: str | None = None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The job as the container sees it (paths rewritten) and its (host path, container
    path) pairs. Only existing regular files, and only under data_dir when it is set; a
    file's host path is under host_data_dir when the worker sees data_dir elsewhere."""
    sandboxed, files = plan_job_files(job, os.path.realpath(data_dir) if data_dir else None)
    return sandboxed, [(on_host(real, data_dir, host_data_dir), t) for real, t in files]


def on_host(real: str, data_dir: str | None, host_data_dir: str | None) -> str:
    """A file's path (as the worker sees it, under data_dir) as the engine's host sees it."""
    if not data_dir or not host_data_dir:
        return real
    return str(Path(host_data_dir) / os.path.relpath(real, os.path.realpath(data_dir)))


def container_options(
    config: DockerConfig,
    limits: dict[str, int],
    files: list[tuple[str, str]],
    *,
    warm: bool = False,
) -> dict[str, Any]:
    """Everything `containers.create` receives: a pure function, so tests compare it whole.
    `warm`: a pooled container (the runner warms up, then waits for its job)."""
    memory = int(limits["memory_mb"]) << 20
    threads = str(max(1, math.ceil(config.cpus)))
    options: dict[str, Any] = {
        "image": config.image,
        # The entrypoint, not a command: whatever the image's own ENTRYPOINT, this runs.
        "entrypoint": [*RUNNER_COMMAND, "--warm"] if warm else list(RUNNER_COMMAND),
        # Not detached, so the SDK also sets StdinOnce: the runner reads EOF once the
        # connection that wrote the job closes.
        "stdin_open": True,
        "tty": False,
        "user": config.user,
        "working_dir": SANDBOX_TMP,
        "hostname": "sandbox",
        "environment": {
            "HOME": SANDBOX_TMP,
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        },
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {SANDBOX_TMP: f"rw,noexec,nosuid,nodev,size={config.tmp_mb}m"},
        "mem_limit": memory,
        "memswap_limit": memory,  # the same: no swap
        "nano_cpus": int(config.cpus * 1e9),
        "pids_limit": config.max_processes,
        "cap_drop": ["ALL"],
        # the engine takes a profile's JSON itself (the CLI reads a file into this)
        "security_opt": ["no-new-privileges", f"seccomp={SECCOMP_PROFILE}"],
        "ipc_mode": "private",
        "oom_score_adj": 1000,  # on a host under pressure, a sandbox goes first
        "ulimits": [
            Ulimit(name="nofile", soft=1024, hard=1024),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "log_config": LogConfig(type=LogConfig.types.NONE),
        "labels": {**CONTAINER_LABELS, **({POOL_LABEL: "true"} if warm else {})},
        "mounts": [
            Mount(target=target, source=source, type="bind", read_only=True)
            for source, target in files
        ],
    }
    if config.runtime:
        options["runtime"] = config.runtime
    return options


class DockerBackend(Backend):
    name = "docker"

    def __init__(
        self,
        client: DockerClient,
        config: DockerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.config = config or DockerConfig()
        super().__init__(self.config.limits, clock)
        # the limits a pooled container is created with: a job asking for other ones is cold
        self.pool_limits = with_limits({}, self.limits)["limits"]
        self._pool: Pool | None = None
        if self.config.pool_size > 0:
            if self.config.data_dir is None:
                log.warning("no sandbox pool: it needs a data directory for its slots")
            else:
                self._pool = self._make_pool()

    def _make_pool(self) -> Pool:
        assert self.config.data_dir is not None
        host_root = self.config.host_data_dir or self.config.data_dir

        def create(host_slot: str) -> Container:
            files = [(host_slot, JOB_DIR)]
            return self._create(container_options(self.config, self.pool_limits, files, warm=True))

        return Pool(
            size=self.config.pool_size,
            slots=Path(os.path.realpath(self.config.data_dir)) / SLOTS_DIR,
            host_slots=Path(host_root) / SLOTS_DIR,
            create=create,
            remove=self._remove,
            ready_timeout_s=self.config.pool_ready_timeout_s,
            max_age_s=self.config.pool_max_age_s,
            clock=self._clock,
            sweep=self._sweep_leftovers,
        )

    def _sweep_leftovers(self) -> int:
        """Pooled containers that exited over a minute ago: a worker killed while they
        waited (its attach connections closed, their runners read an empty job and exited).
        A live pool removes its own within moments of their exit."""
        cutoff = datetime.now(UTC) - timedelta(seconds=60)
        removed = 0
        filters = {"label": POOL_LABEL, "status": "exited"}
        for container in self.client.containers.list(all=True, filters=filters):
            finished = str(((container.attrs or {}).get("State") or {}).get("FinishedAt", ""))
            try:
                ended = datetime.fromisoformat(finished[:26].rstrip("Z") + "+00:00")
            except ValueError:
                continue
            if ended < cutoff:
                self._remove(container)
                removed += 1
        return removed

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerBackend:
        import docker

        try:
            if settings.sandbox_docker_url:
                client = docker.DockerClient(base_url=settings.sandbox_docker_url)
            else:
                client = docker.from_env()
        except _ENGINE_ERRORS as exc:
            raise SandboxUnavailable(
                f"The Docker engine is unreachable ({exc}). Start Docker, or point "
                "SANDBOX_DOCKER_URL (or DOCKER_HOST) at it."
            ) from None
        config = DockerConfig(
            **container_settings(settings),
            max_processes=settings.sandbox_max_processes,
            host_data_dir=settings.sandbox_docker_host_data_dir,
            runtime=settings.sandbox_docker_runtime,
            pull_missing=settings.sandbox_docker_pull,
            pool_size=settings.sandbox_pool_size if settings.sandbox_mode == "warm" else 0,
        )
        backend = cls(client, config)
        if backend._pool is not None:
            backend._pool.start()  # warming while the worker waits for its first snippet
        return backend

    # --- one job ------------------------------------------------------------------------------
    def _execute(self, job: dict[str, Any], key: int) -> dict[str, Any]:
        limits = job["limits"]
        sandboxed, files = plan_files(job, self.config.data_dir)  # the worker's paths
        payload = json.dumps(sandboxed).encode()
        if self._pool is not None and limits["memory_mb"] == self.pool_limits["memory_mb"]:
            warm = self._pool.take(self.config.pool_wait_s)
            if warm is not None:
                try:
                    self._pool.link(warm, files)
                except OSError as exc:
                    log.info("job files not linkable into a pooled sandbox (%s): cold", exc)
                    self._pool.put_back(warm)
                else:
                    try:
                        with self._runs.running(key, warm.container):
                            return self._drive_warm(warm, payload, limits)
                    finally:
                        self._pool.finish(warm)
        data_dir, host_data_dir = self.config.data_dir, self.config.host_data_dir
        mounts = [(on_host(real, data_dir, host_data_dir), t) for real, t in files]
        container = self._create(container_options(self.config, limits, mounts))
        try:
            with self._runs.running(key, container):
                return self._drive(container, payload, limits)
        finally:
            self._remove(container)

    def _create(self, options: dict[str, Any]) -> Container:
        image = self.config.image
        try:
            return self._create_once(options)
        except ImageNotFound:
            if not self.config.pull_missing:
                raise SandboxUnavailable(_missing_image(image)) from None
        log.info("pulling the runner image %s", image)
        try:
            self.client.images.pull(image)
            return self._create_once(options)
        except _ENGINE_ERRORS as exc:
            problem = f"{_missing_image(image)} (pulling it failed: {exc})"
            raise SandboxUnavailable(problem) from None

    def _create_once(self, options: dict[str, Any]) -> Container:
        try:
            return self.client.containers.create(**options)
        except ImageNotFound:
            raise
        except APIError as exc:
            raise SandboxUnavailable(
                f"The Docker engine refused to create the sandbox: {exc.explanation or exc}"
            ) from None
        except _ENGINE_ERRORS as exc:
            raise SandboxUnavailable(f"The Docker engine is unreachable: {exc}") from None

    def _drive(
        self, container: Container, payload: bytes, limits: dict[str, int]
    ) -> dict[str, Any]:
        # Attach to the output before starting: nothing the runner writes can be missed.
        try:
            output = container.attach_socket(params={"stdout": 1, "stderr": 1, "stream": 1})
        except _ENGINE_ERRORS as exc:
            raise SandboxUnavailable(f"Could not attach to the sandbox container: {exc}") from None
        try:
            try:
                container.start()
            except _ENGINE_ERRORS as exc:
                raise SandboxUnavailable(f"The sandbox container did not start: {exc}") from None
            deadline = self._clock() + float(limits["timeout_s"]) + self.config.start_grace_s
            self._send_job(container, payload, deadline)
            raw, stderr, problem = stream.read_output(
                stream.raw_socket(output), deadline, int(limits["max_output_bytes"]), self._clock
            )
        finally:
            stream.close(output)
        return self._outcome(container, raw, stderr, problem, limits, deadline)

    def _drive_warm(self, warm: Warm, payload: bytes, limits: dict[str, int]) -> dict[str, Any]:
        """A pooled container: its interpreter is up, so only the snippet's own time and the
        kill grace count; a whole, valid result needs no word from the engine."""
        deadline = self._clock() + float(limits["timeout_s"]) + KILL_GRACE_S
        stream.send(warm.stdin, payload, deadline, self._clock)
        try:
            raw, stderr, problem = stream.read_output(
                stream.raw_socket(warm.output),
                deadline,
                int(limits["max_output_bytes"]),
                self._clock,
                warm.demux,
                framed=True,
            )
        finally:
            stream.close(warm.output)
        if problem is None and raw:
            result = parse_result(raw, 0)
            if (result.get("error") or {}).get("type") != "SandboxError":
                return result
        return self._outcome(warm.container, raw, stderr, problem, limits, deadline)

    def _outcome(
        self,
        container: Container,
        raw: bytes,
        stderr: bytes,
        problem: str | None,
        limits: dict[str, int],
        deadline: float,
    ) -> dict[str, Any]:
        status = self._exit_status(container, deadline) if problem is None else None
        if status is None:
            self._stop(container)
            return too_large(limits) if problem == "too_large" else timed_out(limits)
        code, oom = status
        if stderr:
            log.debug("sandbox stderr (tail): %s", stderr.decode(errors="replace"))
        if oom or (code == 137 and not raw):
            return out_of_memory(limits)
        if not raw:
            return ended_without_result("container", f" (exit code {code})")
        return parse_result(raw, 0)

    def _send_job(self, container: Container, payload: bytes, deadline: float) -> None:
        """Write the job to the runner's stdin over its own attach connection."""
        try:
            attached = container.attach_socket(params={"stdin": 1, "stream": 1})
        except _ENGINE_ERRORS as exc:
            log.warning("could not attach to the sandbox's stdin: %s", exc)
            return
        stream.send(attached, payload, deadline, self._clock)

    def _exit_status(self, container: Container, deadline: float) -> tuple[int, bool] | None:
        """(exit code, killed for memory) once the container has ended; None if it has not
        by the deadline."""
        try:
            answer = container.wait(timeout=max(1.0, deadline - self._clock()))
            container.reload()
        except _ENGINE_ERRORS as exc:
            log.warning("sandbox did not end in time: %s", exc)
            return None
        state = (container.attrs or {}).get("State") or {}
        return int(answer.get("StatusCode", -1)), bool(state.get("OOMKilled"))

    def _stop(self, handle: Any) -> None:
        """Kill a container (its run() sees the output end); removing it is run()'s job."""
        try:
            handle.kill()
        except _ENGINE_ERRORS as exc:  # already gone: remove() deals with it
            log.debug("kill: %s", exc)

    def _remove(self, container: Container) -> None:
        self._runs.discard(container)
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except _ENGINE_ERRORS as exc:
            log.warning("could not remove sandbox container %s: %s", container.id, exc)

    # --- the rest of the interface ------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"backend": self.name, "image": self.config.image}
        if self._pool is not None:
            answer.update(self._pool.stats())
        try:
            self.client.ping()
        except _ENGINE_ERRORS as exc:
            return {**answer, "ok": False, "error": f"the Docker engine is unreachable: {exc}"}
        try:
            self.client.images.get(self.config.image)
            present = True
        except ImageNotFound:
            present = False
        except _ENGINE_ERRORS as exc:
            return {**answer, "ok": False, "error": str(exc)}
        return {**answer, "ok": True, "image_present": present}

    def close(self) -> None:
        """Stop what is still running (a worker shutting down mid-snippet), then let go."""
        if self._pool is not None:
            self._pool.close()
        self.terminate()
        for container in self.running():
            self._remove(container)
        with contextlib.suppress(*_ENGINE_ERRORS):
            self.client.close()


def _missing_image(image: str) -> str:
    return (
        f"The runner image {image!r} is not available to the Docker engine: build it with "
        f"`docker build -f runner/Dockerfile -t {image} .`"
    )
