"""The warm pool: `python -m worker.sandbox.zygote <control fd> <config json>`.

A process with the runner and its libraries imported and exercised once, holding nothing
secret (its environment is scrubbed by the worker that starts it). It forks sandbox
children ahead of demand — each isolates itself at once and waits for its one job — and
hands each one's socket to the worker over the control socket. When the worker takes one,
it says so with one byte and the zygote forks a replacement. It reaps its children and
kills whatever they left running in their process group. When the worker goes away
(control socket closed) the zygote kills its children and exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import replace

from runner import main as runner_main
from worker.sandbox import child, isolation, protocol, seccomp

TAKEN = b"T"
REFILL_DELAY_S = 0.05


class Zygote:
    def __init__(self, control: socket.socket, config: dict[str, object]) -> None:
        self.control = control
        self.plan = isolation.Plan(**config["plan"])  # type: ignore[arg-type]
        self.pool_size = int(config["pool_size"])  # type: ignore[call-overload]
        self.uid_base = config.get("uid_base")
        self.uid_slots = int(config.get("uid_slots", 1000))  # type: ignore[call-overload]
        self.outstanding = 0
        self.children: set[int] = set()
        self.counter = 0
        self.warm_data_fd = warm_data()
        self.takes: deque[float] = deque(maxlen=64)
        self.pid_namespaces = isolation.PidNamespaces() if self.plan.namespaces else None
        self.raw = bool(config.get("raw"))  # ProcessConfig.unrestricted_for_tests

    def spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.counter += 1
        plan = self.plan
        if self.uid_base is not None:
            uid = int(self.uid_base) + self.counter % self.uid_slots  # type: ignore[call-overload]
            plan = replace(plan, uid=uid, gid=uid)
        # A full warm-up costs a child ~0.1 s of CPU: when jobs come faster than the pool
        # can warm children fully, it refills with lightly warmed ones (ready sooner, a
        # first group-by or chart in them is slower).
        recent = [t for t in self.takes if t > time.monotonic() - 1.0]
        self.takes = deque(recent, maxlen=64)
        level = "light" if len(recent) > self.pool_size else "full"
        pid = self.pid_namespaces.fork() if self.pid_namespaces else os.fork()
        if pid == 0:  # the child: becomes a sandbox
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ours.close()
            self.control.close()
            child.isolate_and_serve(
                theirs, plan, warm_up=level, warm_data_fd=self.warm_data_fd, raw=self.raw
            )
        theirs.close()
        self.children.add(pid)
        protocol.send_handle(self.control, ours.fileno(), f"{pid}".encode())
        ours.close()
        self.outstanding += 1

    def reap(self, *_args: object) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            # whatever the snippet started in its group goes with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def run(self) -> None:
        signal.signal(signal.SIGCHLD, self.reap)
        try:
            self.control.sendall(b"READY")
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker went away: shut down below
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        # Reap them before going: orphans would be left to an init that may never reap.
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _serve(self) -> None:
        refill_at = 0.0
        while True:
            now = time.monotonic()
            # Refill at once when the pool is empty; otherwise a moment later, so that a
            # job just handed out does not share the CPU with a child forking and warming.
            if self.outstanding == 0 or (self.outstanding < self.pool_size and now >= refill_at):
                while self.outstanding < self.pool_size:
                    self.spawn()
            wait = max(0.0, refill_at - now) if self.outstanding < self.pool_size else None
            try:
                readable, _, _ = select.select([self.control], [], [], wait)
            except InterruptedError:
                continue
            if not readable:
                continue
            message = self.control.recv(64)
            if not message:
                return
            taken = message.count(TAKEN)
            self.outstanding -= taken
            self.takes.extend([time.monotonic()] * taken)
            refill_at = time.monotonic() + REFILL_DELAY_S


def warm_data(rows: int = 100_000) -> int:
    """An Arrow IPC file of realistic shape in an anonymous memory file: the children's
    warm-up loads it through the same code path a dataset takes (no filesystem needed)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    regions = np.array(["north", "south", "east", "west", "centre"])
    products = np.array([f"p{i}" for i in range(20)])
    table = pa.table(
        {
            "region": regions[rng.integers(0, len(regions), rows)],
            "product": products[rng.integers(0, len(products), rows)],
            "amount": rng.gamma(2.0, 50.0, rows).round(2),
            "quantity": rng.integers(1, 20, rows),
        }
    )
    # text as the converter stores it for the sandbox (large_string)
    table = table.cast(
        pa.schema(
            [f.with_type(pa.large_string()) if f.type == pa.string() else f for f in table.schema]
        )
    )
    fd = os.memfd_create("quarry-warm-up")
    with os.fdopen(os.dup(fd), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return fd


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(sys.argv[2])
    runner_main.prepare(warm=bool(config.get("warm", True)))
    if config["plan"].get("seccomp", True):
        seccomp.prepare()  # built once here; each child only loads it
    # Everything loaded so far is shared, read-mostly, by every child: keep the collector
    # from touching (and so copying) it in each of them.
    gc.collect()
    gc.freeze()
    Zygote(control, config).run()


if __name__ == "__main__":
    main()
