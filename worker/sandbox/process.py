"""The process backend: a fresh, isolated, single-use local process per snippet.

Warm (default): a zygote with the runner's libraries loaded and exercised keeps a few
children forked, isolated and waiting; a job goes to one of them, which runs it and exits.
Cold: a new interpreter per job (for comparison and as a fallback).

The worker never trusts the child: it sends the job with the dataset files as read-only
descriptors, reads at most `max_output_bytes` of JSON back before the deadline, kills the
child's whole process group when the deadline passes, and parses nothing but JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from worker.sandbox import isolation, protocol
from worker.sandbox.base import (
    KILL_GRACE_S,
    OUTPUT_SLACK,
    Backend,
    SandboxUnavailable,
    default_limits,
    ended_without_result,
    failure,
    parse_result,
    timed_out,
    too_large,
)

if TYPE_CHECKING:
    from api.config import Settings

log = logging.getLogger("quarry.sandbox")

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "HOME")


def sandbox_env() -> dict[str, str]:
    """The zygote's (and so every child's) environment: no database URL, key or token,
    and one thread per numeric library (threads forked mid-flight would hang)."""
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("COVERAGE_")}
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NUMEXPR_MAX_THREADS="1",
        ARROW_DEFAULT_MEMORY_POOL="system",
        MALLOC_ARENA_MAX="2",
        # Keep freed memory in the heap (a child's warm-up grows it; the job reuses those
        # pages instead of faulting in fresh ones).
        MALLOC_TRIM_THRESHOLD_=str(512 << 20),
        MALLOC_MMAP_THRESHOLD_=str(64 << 20),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONHASHSEED="0",
    )
    return env


UID_BLOCK = 50  # uids one backend (one worker process) cycles through
UID_BLOCKS = 20  # backends on one host with uids of their own (SANDBOX_UID_BASE + 1000)
UID_LOCK_DIR = "/run/quarry-sandbox"


def lease_uid_block(base: int, folder: str = UID_LOCK_DIR) -> tuple[int, Any]:
    """A block of UID_BLOCK uids no other backend on this host is using, held (by an
    exclusive lock on a file) until the returned handle is closed or the process exits.

    Two worker processes cycling through the same uids would share what the kernel counts
    per uid (RLIMIT_NPROC above all: one sandbox's processes would count against the
    other's). When every block is taken, the first is shared, with a warning."""
    import fcntl

    os.makedirs(folder, mode=0o700, exist_ok=True)
    for n in range(UID_BLOCKS):
        handle = open(os.path.join(folder, f"uids-{base}-{n}.lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return base + n * UID_BLOCK, handle
    log.warning("all %d sandbox uid blocks from %d are in use: sharing the first", UID_BLOCKS, base)
    return base, None


@dataclass
class ProcessConfig:
    warm: bool = True
    pool_size: int = 2
    allow_weak_isolation: bool = False
    uid_base: int | None = 61000  # a uid per child when running as root
    start_timeout_s: float = 120.0
    limits: dict[str, int] = field(default_factory=dict)
    # Tests only (tests/security/test_unrestricted.py): snippets run as plain Python — real
    # builtins, no RestrictedPython — in the same jail, to show the OS layer holds alone.
    # No setting, job or API call reaches it; warm mode only.
    unrestricted_for_tests: bool = False


class _Child:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, config: ProcessConfig | None = None) -> None:
        self.config = config or ProcessConfig()
        super().__init__(self.config.limits)
        if self.config.unrestricted_for_tests and not self.config.warm:
            raise ValueError("unrestricted_for_tests runs in the warm pool only")
        self._lock = threading.Lock()  # the pool
        self._ready: deque[_Child] = deque()
        self._zygote: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self.plan = isolation.Plan(read_only=isolation.default_read_only_paths())
        self._uid_lease: Any = None
        self._uid_start = self.config.uid_base
        if os.getuid() == 0 and self.config.uid_base is not None:
            self.plan.uid = self.plan.gid = self.config.uid_base
        self.weak = False
        problem = isolation.probe(self.plan)
        if problem:
            if not self.config.allow_weak_isolation:
                raise SandboxUnavailable(
                    f"The process sandbox cannot isolate snippets here ({problem}). Run the "
                    "worker with the privileges it needs (root, or unprivileged user "
                    "namespaces), use another SANDBOX_BACKEND, or set "
                    "SANDBOX_ALLOW_WEAK_ISOLATION=1 for development only."
                )
            self.weak = True
            self.plan.namespaces = False
            self.plan.uid = self.plan.gid = None
            if isolation.probe(self.plan):  # the filter alone, where it still loads
                self.plan.seccomp = False
            kept = "resource limits"
            if self.plan.seccomp:
                kept = "the seccomp filter and resource limits"
            warnings.warn(
                f"SANDBOX ISOLATION IS WEAK: {problem}. Snippets run without namespaces, "
                f"with {kept} only. Never use this with untrusted users.",
                stacklevel=2,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessBackend:
        return cls(
            ProcessConfig(
                warm=settings.sandbox_mode == "warm",
                pool_size=settings.sandbox_pool_size,
                allow_weak_isolation=settings.sandbox_allow_weak_isolation,
                uid_base=settings.sandbox_uid_base,
                limits=default_limits(settings),
            )
        )

    # --- the pool -----------------------------------------------------------------------------
    def _start_zygote(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {
            "plan": asdict(self.plan),
            "pool_size": self.config.pool_size,
            "uid_base": self._lease_uids() if self.plan.uid is not None else None,
            "uid_slots": UID_BLOCK,
            "warm": True,
            "raw": self.config.unrestricted_for_tests,
        }
        self._zygote = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "worker.sandbox.zygote",
                str(theirs.fileno()),
                json.dumps(config),
            ],
            pass_fds=[theirs.fileno()],
            env=sandbox_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        theirs.close()
        ours.settimeout(self.config.start_timeout_s)
        try:
            hello = ours.recv(64)
        except TimeoutError:
            hello = b""
        if hello != b"READY":
            self._stop_zygote()
            raise SandboxUnavailable("The sandbox pool did not start.")
        ours.settimeout(None)
        self._control = ours

    def _stop_zygote(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._zygote is not None:
            try:
                self._zygote.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._zygote.pid, signal.SIGKILL)
                self._zygote.wait()
            self._zygote = None
        while self._ready:
            child = self._ready.popleft()
            child.sock.close()

    def _drain(self, block: float | None) -> None:
        """Collect children the zygote has made ready (waiting up to `block` seconds for
        the first one)."""
        assert self._control is not None
        timeout = block
        while True:
            readable, _, _ = select.select([self._control], [], [], timeout)
            if not readable:
                return
            fd, info = protocol.receive_handle(self._control)
            self._ready.append(_Child(int(info.decode()), socket.socket(fileno=fd)))
            timeout = 0

    def _take_warm(self) -> _Child:
        with self._lock:
            for attempt in range(2):
                try:
                    if self._control is None:
                        self._start_zygote()
                    self._drain(0)
                    if not self._ready:
                        self._drain(self.config.start_timeout_s)
                    if not self._ready:
                        raise SandboxUnavailable("No sandbox became ready in time.")
                    child = self._pick()
                    assert self._control is not None
                    self._control.send(b"T")
                    return child
                except (EOFError, OSError) as exc:
                    log.warning("sandbox pool restarting", extra={"reason": str(exc)})
                    self._stop_zygote()
                    if attempt:
                        raise SandboxUnavailable(f"The sandbox pool failed: {exc}") from None
        raise SandboxUnavailable("unreachable")  # pragma: no cover

    def _pick(self) -> _Child:
        """A child that has finished warming up (its ready byte is waiting), or else the
        first one to finish: children still warming are not made to hurry."""
        waiting = list(self._ready)
        readable, _, _ = select.select([c.sock for c in waiting], [], [], 0)
        if not readable:
            readable, _, _ = select.select(
                [c.sock for c in waiting], [], [], self.config.start_timeout_s
            )
        chosen = next((c for c in waiting if c.sock in readable), waiting[0])
        self._ready.remove(chosen)
        return chosen

    def _take_cold(self) -> _Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "worker.sandbox.child",
                str(theirs.fileno()),
                json.dumps(asdict(self.plan)),
            ],
            pass_fds=[theirs.fileno()],
            env=sandbox_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        threading.Thread(target=proc.wait, daemon=True).start()  # reap it when it is done
        return _Child(proc.pid, ours)

    # --- one job ----------------------------------------------------------------------------
    def _execute(self, job: dict[str, Any], key: int) -> dict[str, Any]:
        limits = job["limits"]
        # The files first: a job naming a missing one costs no sandbox.
        try:
            sandboxed, fds = protocol.rewrite_paths(job)
        except (OSError, ValueError) as exc:
            return failure("JobError", f"The job's files cannot be handed to the sandbox: {exc}")
        payload = json.dumps(sandboxed).encode()
        if len(payload) > protocol.MAX_JOB_BYTES:
            for fd in fds:
                os.close(fd)
            return failure(
                "JobError",
                f"The job is {len(payload)} bytes; at most {protocol.MAX_JOB_BYTES} (the code "
                "and workspace values travel in it: keep big data in datasets).",
            )
        try:
            child = self._take_warm() if self.config.warm else self._take_cold()
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        started = time.perf_counter()
        # A cold child still has to start its interpreter: that is not the snippet's time.
        startup = 0.0 if self.config.warm else 30.0
        deadline = started + float(limits["timeout_s"]) + startup
        sent = started
        try:
            with self._runs.running(key, child):
                try:
                    ready = self._wait_ready(child, deadline)
                    if ready is not None:
                        return ready
                    protocol.send_job(child.sock, payload, fds)
                    # The snippet's clock starts when it has its job. The runner stops it at
                    # timeout_s itself; the kill is for what does not stop (KILL_GRACE_S).
                    sent = time.perf_counter()
                    deadline = sent + float(limits["timeout_s"]) + KILL_GRACE_S
                finally:
                    for fd in fds:
                        os.close(fd)
                raw, problem = self._read(child, deadline, int(limits["max_output_bytes"]))
        finally:
            child.kill()
            child.sock.close()
        if problem == "timeout":
            return timed_out(limits, time.perf_counter() - sent)
        if problem == "too_large":
            return too_large(limits)
        if not raw:
            return ended_without_result(
                "process",
                f": it used more than its {limits['memory_mb']} MB of memory, its CPU time, "
                "or crashed",
            )
        return parse_result(raw, 0)

    def _stop(self, handle: Any) -> None:
        handle.kill()  # its run() sees the end of the socket and reports Cancelled

    def _wait_ready(self, child: _Child, deadline: float) -> dict[str, Any] | None:
        child.sock.settimeout(max(0.01, deadline - time.perf_counter()))
        try:
            first = child.sock.recv(1)
        except TimeoutError:
            return failure("SandboxError", "The sandbox did not start in time.")
        if first == b"R":
            return None
        detail = child.sock.recv(1000).decode(errors="replace") if first == b"E" else ""
        raise SandboxUnavailable(detail or "The sandbox process died while starting.")

    def _read(self, child: _Child, deadline: float, cap: int) -> tuple[bytes, str | None]:
        chunks: list[bytes] = []
        size = 0
        limit = cap + OUTPUT_SLACK
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return b"", "timeout"
            child.sock.settimeout(remaining)
            try:
                chunk = child.sock.recv(1 << 20)
            except TimeoutError:
                return b"", "timeout"
            except OSError:
                return b"".join(chunks), None
            if not chunk:
                return b"".join(chunks), None
            size += len(chunk)
            if size > limit:
                return b"", "too_large"
            chunks.append(chunk)

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "ok": True,
            "isolation": "weak" if self.weak else "namespaces",
            "mode": "warm" if self.config.warm else "cold",
            "pool_ready": len(self._ready),
        }

    def _lease_uids(self) -> int:
        if self._uid_lease is None and self.config.uid_base is not None:
            self._uid_start, self._uid_lease = lease_uid_block(self.config.uid_base)
        return int(self._uid_start or 0)

    def close(self) -> None:
        self.terminate()
        with self._lock:
            self._stop_zygote()
            if self._uid_lease is not None:
                self._uid_lease.close()
                self._uid_lease = None
