"""The docker backend's pool: runner containers started before their jobs.

A container costs `create` + `start` + attach + an interpreter that imports pandas, plotly
and scikit-learn: seconds, on every snippet. The pool keeps `size` containers that have
already paid it (`python -m runner --warm`: the libraries loaded and exercised, the runner
waiting for its job on stdin, "ready" said on stderr), each still single-use and created
with exactly the cold path's limits and isolation.

What a pooled container may see is decided when its job arrives, not when it starts: it is
created with one read-only bind mount, `/job`, of an empty folder of its own (a *slot*,
under `DATA_DIR/sandbox-slots/`). At hand-off the worker hard-links the job's dataset and
workspace files into the slot, under the names the job gives them (`/job/dataset-0`...),
then writes the job. Before that the container sees nothing of the data directory; after,
exactly its job's files, read-only, as on the cold path. The slot and the container are
removed once the result is in. A hard link is a name, not a copy: it costs nothing whatever
the dataset's size, and a file deleted meanwhile stays readable to the job that has it.

A filler thread keeps the pool full, one container at a time (a warm-up takes a CPU for
about a second), and replaces containers older than `max_age_s` (an idle attach connection
is not kept forever). A job that finds no ready container waits up to `wait_s` for one
that is warming, else takes the cold path; so does a job with other limits than the pool's
or files that cannot be linked (another filesystem).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.sandbox import docker_stream as stream

log = logging.getLogger("quarry.sandbox.docker")

SLOTS_DIR = "sandbox-slots"
READY_LINE = b"quarry-runner: ready\n"  # runner/main.py, READY_LINE
# Slots and pooled containers left by a worker that died (kill -9) go after this long.
ABANDONED_AFTER_S = 3600.0


@dataclass
class Warm:
    """One started container waiting for its job."""

    container: Any
    output: Any  # the attach connection its stdout and stderr come back on
    stdin: Any  # the attach connection its job goes in on
    slot: Path  # the folder mounted at /job, as the worker sees it
    started: float
    demux: stream.Demux = field(default_factory=stream.Demux)


class Pool:
    """`take()` a ready container (or None); `finish(warm)` once its job is done."""

    def __init__(
        self,
        *,
        size: int,
        slots: Path,
        host_slots: Path,
        create: Callable[[str], Any],
        remove: Callable[[Any], None],
        ready_timeout_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
        sweep: Callable[[], int] | None = None,
    ) -> None:
        self.size = size
        self._sweep = sweep  # removes pooled containers a dead worker left; how many
        self.slots = slots  # where the worker makes slot folders
        self.host_slots = host_slots  # the same folder as the Docker engine's host sees it
        self._create = create  # a created (not started) container, its /job bound to a path
        self._remove = remove  # a container removed, whatever its state (errors logged)
        self.ready_timeout_s = ready_timeout_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._ready: deque[Warm] = deque()
        self._warming = 0
        self._changed = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._failures = 0
        self.last_error: str | None = None
        # removals of used containers, off the jobs' time; `close` waits for them
        self._removals = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-remove")
        # jobs that found a container ready, waited for one warming, or found none (cold)
        self.counts = {"ready": 0, "waited": 0, "none": 0}

    # --- the filler ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._changed:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._fill, name="sandbox-pool", daemon=True)
            self._thread.start()

    def _fill(self) -> None:
        self._remove_abandoned_slots()
        if self._sweep is not None:
            try:
                if swept := self._sweep():
                    log.info("removed %d sandbox containers a stopped worker left", swept)
            except Exception as exc:  # the engine is away: the fill below will say so
                log.debug("sandbox leftover sweep failed: %s", exc)
        while True:
            with self._changed:
                while not self._closed and len(self._ready) + self._warming >= self.size:
                    self._changed.wait(timeout=self._retire_after())
                    self._retire_old()
                if self._closed:
                    return
                self._warming += 1
            warm = None
            try:
                warm = self._start_one()
            except Exception as exc:  # an engine error: say it, back off, try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("sandbox pool could not start a container: %s", self.last_error)
            with self._changed:
                self._warming -= 1
                if warm is not None:
                    self._failures = 0
                    if self._closed:
                        self._discard_later(warm)
                    else:
                        self._ready.append(warm)
                else:
                    self._failures += 1
                self._changed.notify_all()
                backoff = min(30.0, 0.5 * 2 ** min(self._failures, 6)) if warm is None else 0
            if backoff:
                with self._changed:
                    self._changed.wait(timeout=backoff)

    def _start_one(self) -> Warm | None:
        name = secrets.token_hex(8)
        slot = self.slots / name
        slot.mkdir(mode=0o755, parents=True)
        slot.chmod(0o755)  # the runner's user must list it, whatever the umask
        container = output = stdin = None
        try:
            container = self._create(str(self.host_slots / name))
            output = container.attach_socket(params={"stdout": 1, "stderr": 1, "stream": 1})
            stdin = container.attach_socket(params={"stdin": 1, "stream": 1})
            container.start()
            warm = Warm(container, output, stdin, slot, self._clock())
            deadline = self._clock() + self.ready_timeout_s
            sock = stream.raw_socket(output)
            if not stream.wait_for_line(sock, READY_LINE, deadline, self._clock, warm.demux):
                tail = bytes(warm.demux.stderr[-300:]).decode(errors="replace")
                raise RuntimeError(f"the runner did not say it was ready ({tail or 'no output'})")
            return warm
        except BaseException:
            for attached in (stdin, output):
                if attached is not None:
                    stream.close(attached)
            if container is not None:
                self._remove(container)
            shutil.rmtree(slot, ignore_errors=True)
            raise

    def _retire_after(self) -> float | None:
        if not self._ready:
            return None
        return max(0.1, self._ready[0].started + self.max_age_s - self._clock())

    def _retire_old(self) -> None:
        """Containers past `max_age_s` go (the filler starts new ones). Lock held."""
        now = self._clock()
        while self._ready and now - self._ready[0].started > self.max_age_s:
            self._discard_later(self._ready.popleft())

    def _remove_abandoned_slots(self) -> None:
        """Slot folders a dead worker left (their containers were removed with it, or are
        removed by their own label): anything this old is no pooled container's."""
        cutoff = time.time() - ABANDONED_AFTER_S
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.slots):
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        shutil.rmtree(entry.path, ignore_errors=True)

    # --- jobs ---------------------------------------------------------------------------------
    def take(self, wait_s: float) -> Warm | None:
        """A ready container, waiting up to `wait_s` for one being warmed; None when there is
        none (the caller takes the cold path). Counted: ready at once, after a wait, none."""
        self.start()
        deadline = self._clock() + wait_s
        waited = False
        with self._changed:
            while True:
                self._retire_old()
                while self._ready:
                    warm = self._ready.popleft()
                    self._changed.notify_all()  # the filler starts the next one
                    if _still_waiting(warm):
                        self.counts["waited" if waited else "ready"] += 1
                        return warm
                    log.info("a pooled sandbox container had ended: discarded")
                    self._discard_later(warm)
                remaining = deadline - self._clock()
                # none warming and the last start failed: the filler is backing off
                failing = self._warming == 0 and self._failures > 0
                if self._closed or failing or remaining <= 0:
                    self.counts["none"] += 1
                    return None
                waited = True
                self._changed.wait(timeout=remaining)

    def put_back(self, warm: Warm) -> None:
        """A container taken but not used (its job's files could not be linked)."""
        for entry in warm.slot.iterdir():
            entry.unlink()
        with self._changed:
            if self._closed:
                self._discard_later(warm)
            else:
                self._ready.appendleft(warm)
                self._changed.notify_all()

    def link(self, warm: Warm, files: list[tuple[str, str]]) -> None:
        """The job's files, by their in-container names, into the container's slot: hard
        links (OSError where they cannot be made, e.g. across filesystems)."""
        for real, target in files:
            # `real` was resolved and checked (job_file); never follow a link made since
            os.link(real, warm.slot / Path(target).name, follow_symlinks=False)

    def finish(self, warm: Warm) -> None:
        """The job is done: the container and its slot go, off the caller's time."""
        self._discard_later(warm)

    def _discard_later(self, warm: Warm) -> None:
        try:
            self._removals.submit(self._discard, warm)
        except RuntimeError:  # closed already (a job ending during shutdown): here and now
            self._discard(warm)

    def _discard(self, warm: Warm) -> None:
        stream.close(warm.stdin)
        stream.close(warm.output)
        self._remove(warm.container)
        shutil.rmtree(warm.slot, ignore_errors=True)

    # --- the rest -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._changed:
            answer: dict[str, Any] = {
                "pool_size": self.size,
                "pool_ready": len(self._ready),
                "pool_warming": self._warming,
                "pool_jobs": dict(self.counts),
            }
        if self.last_error:
            answer["pool_last_error"] = self.last_error
        return answer

    def close(self) -> None:
        with self._changed:
            self._closed = True
            ready = list(self._ready)
            self._ready.clear()
            self._changed.notify_all()
            thread = self._thread
        for warm in ready:
            self._discard(warm)
        if thread is not None:
            thread.join(timeout=30)
        self._removals.shutdown(wait=True)  # a worker shutting down leaves no container behind


def _still_waiting(warm: Warm) -> bool:
    """Whether the runner is still silent on its output, as a ready one waits: an ended
    container (the engine restarted, it was killed) shows as the stream's end, and its job
    would fail without having run."""
    sock = stream.raw_socket(warm.output)
    if sock is None:
        return False
    try:
        # non-blocking: a socket with a timeout would wait for data up to that timeout,
        # whatever the flags (the next read sets its own timeout again)
        sock.settimeout(0)
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # nothing to read: waiting
    except (ValueError, NotImplementedError):
        return True  # a transport that cannot peek (TLS): the job itself will tell
    except OSError:
        return False
    return False  # the stream ended, or the runner wrote before it had a job
