"""One sandbox process: isolated before any job reaches it, runs exactly one job, exits.

Used by the zygote's forked children (warm) and by `python -m worker.sandbox.child` (cold).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import NoReturn

from runner import main as runner_main
from worker.sandbox import isolation, protocol

READY = b"R"
_WARM_JOB = {"code": "import pandas as pd\nx = pd.DataFrame({'a': [1, 2]})\nx['a'].sum()"}
FAILED = b"E"


def _vm_bytes() -> int:
    try:
        for line in open("/proc/self/status"):  # noqa: SIM115 - read before isolation
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def isolate_and_serve(sock: socket.socket, plan: isolation.Plan, warm_up: bool) -> NoReturn:
    """Never returns: the process ends with its one job (or its failure to isolate)."""
    try:
        baseline = _vm_bytes()  # the interpreter and libraries already mapped
        isolation.enter(plan, keep_fds=(sock.fileno(),))
        if warm_up:
            # A forked interpreter copies each memory page it writes to (reference counts
            # included) on first touch: go through a whole job's path once now, so that
            # the real job does not pay those copies.
            runner_main.run(_WARM_JOB)
        sock.sendall(READY)
    except BaseException as exc:
        try:
            sock.sendall(FAILED + f"isolation failed: {exc}".encode()[:1000])
        finally:
            os._exit(70)
    serve(sock, baseline)


def serve(sock: socket.socket, baseline: int) -> NoReturn:
    status = 0
    try:
        payload, fds = protocol.receive_job(sock)
        job = protocol.resolve_paths(json.loads(payload), fds)
        limits = {**runner_main.DEFAULT_LIMITS, **(job.get("limits") or {})}
        isolation.apply_job_limits(
            memory_bytes=baseline + (int(limits["memory_mb"]) << 20),
            cpu_seconds=int(limits["timeout_s"]) + 2,
        )
        sock.sendall(runner_main.run(job).encode())
        sock.shutdown(socket.SHUT_WR)
    except BaseException:
        status = 71
    finally:
        # No interpreter teardown: exit as soon as the result is out.
        os._exit(status)


def main() -> NoReturn:
    """Cold mode: `python -m worker.sandbox.child <fd> <plan json>`."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    plan = isolation.Plan(**json.loads(sys.argv[2]))
    runner_main.prepare(warm=False)
    isolate_and_serve(sock, plan, warm_up=False)


if __name__ == "__main__":
    main()
