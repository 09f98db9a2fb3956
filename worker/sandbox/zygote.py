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
from dataclasses import replace

from runner import main as runner_main
from worker.sandbox import child, isolation, protocol

TAKEN = b"T"


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

    def spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.counter += 1
        plan = self.plan
        if self.uid_base is not None:
            uid = int(self.uid_base) + self.counter % self.uid_slots  # type: ignore[call-overload]
            plan = replace(plan, uid=uid, gid=uid)
        pid = os.fork()
        if pid == 0:  # the child: becomes a sandbox
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            ours.close()
            self.control.close()
            child.isolate_and_serve(theirs, plan, warm_up=True)
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
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def _serve(self) -> None:
        while True:
            while self.outstanding < self.pool_size:
                self.spawn()
            try:
                readable, _, _ = select.select([self.control], [], [])
            except InterruptedError:
                continue
            if not readable:
                continue
            message = self.control.recv(64)
            if not message:
                return
            self.outstanding -= message.count(TAKEN)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(sys.argv[2])
    runner_main.prepare(warm=bool(config.get("warm", True)))
    # Everything loaded so far is shared, read-mostly, by every child: keep the collector
    # from touching (and so copying) it in each of them.
    gc.collect()
    gc.freeze()
    Zygote(control, config).run()


if __name__ == "__main__":
    main()
