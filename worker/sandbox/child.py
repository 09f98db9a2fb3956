"""One sandbox process: isolated before any job reaches it, runs exactly one job, exits.

Used by the zygote's forked children (warm) and by `python -m worker.sandbox.child` (cold).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import socket
import sys
from typing import NoReturn

from runner import main as runner_main
from runner import policy
from runner.job import DEFAULT_LIMITS, blank_result, utf8_text
from worker.sandbox import isolation, protocol
from worker.sandbox.base import KILL_GRACE_S

READY = b"R"
FAILED = b"E"

# What a child runs on itself after isolation and before it says it is ready. A forked
# interpreter copies every memory page it writes to on first touch (reference counts make
# every object touched a write); on this kind of machine a page fault costs several
# microseconds and a first group-by or chart in a fresh child takes thousands of them.
# Going through a job's whole path once, on data of a realistic size, pays those copies
# while nobody waits; the heap it grew stays in place for the job to reuse.
LIGHT_WARM_UP = "import pandas as pd\nx = pd.DataFrame({'a': [1, 2]})\nx['a'].sum()"
FULL_WARM_UP = """
import pandas as pd
import plotly.express as px
summary = df.groupby('region')['amount'].agg(['mean', 'sum', 'count'])
stats = df.describe()
counts = df['product'].value_counts()
top = df.sort_values('amount').head(10)
chart = px.histogram(df, x='amount')
scatter = px.scatter(df.head(500), x='amount', y='quantity', color='region')
kept = df[df['amount'] > 50]
summary
"""


def _vm_bytes(status_fd: int) -> int:
    try:
        text = os.pread(status_fd, 65536, 0).decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def isolate_and_serve(
    sock: socket.socket,
    plan: isolation.Plan,
    warm_up: str | None,
    warm_data_fd: int | None,
    raw: bool = False,
) -> NoReturn:
    """Never returns: the process ends with its one job (or its failure to isolate).
    `warm_up` is None (cold), "light" or "full"; `warm_data_fd` holds the Arrow data
    a full warm-up works on."""
    try:
        status_fd = os.open("/proc/self/status", os.O_RDONLY)
        keep = [sock.fileno(), status_fd] + ([warm_data_fd] if warm_data_fd is not None else [])
        isolation.enter(plan, keep_fds=tuple(keep))
        if warm_up == "full" and warm_data_fd is not None:
            dataset = {"name": "df", "path": f"fd:{warm_data_fd}", "format": "arrow"}
            runner_main.run({"code": FULL_WARM_UP, "datasets": [dataset]})
        elif warm_up is not None:
            runner_main.run({"code": LIGHT_WARM_UP})
        if warm_data_fd is not None:
            os.close(warm_data_fd)
        # The policy's rules for whatever the warm-up loaded: checked now, not in the job.
        policy.GUARD.ready()
        # What the warm-up left is garbage or long-lived: settle it now, so that the job
        # does not pay a full collection over it.
        gc.collect()
        gc.freeze()
        # The job's memory budget comes on top of what the process holds now.
        baseline = _vm_bytes(status_fd)
        os.close(status_fd)
        sock.sendall(READY)
    except BaseException as exc:
        try:
            sock.sendall(FAILED + f"isolation failed: {exc}".encode()[:1000])
        finally:
            os._exit(70)
    serve(sock, baseline, raw)


def serve(sock: socket.socket, baseline: int, raw: bool = False) -> NoReturn:
    status = 0
    try:
        payload, fds = protocol.receive_job(sock)
        job = protocol.resolve_paths(json.loads(payload), fds)
        limits = {**DEFAULT_LIMITS, **(job.get("limits") or {})}
        isolation.apply_job_limits(
            memory_bytes=baseline + (int(limits["memory_mb"]) << 20),
            # CPU time never ends a snippet before the wall clock does: the backend's kill
            # comes at timeout_s + KILL_GRACE_S, with a message that says so.
            cpu_seconds=math.ceil(int(limits["timeout_s"]) + KILL_GRACE_S) + 2,
        )
        policy.one_job()
        answer = run_unrestricted(job) if raw else runner_main.run(job)
        sock.sendall(utf8_text(answer)[0].encode())
        sock.shutdown(socket.SHUT_WR)
    except BaseException as exc:
        status = 71
        _report(sock, exc)
    finally:
        # No interpreter teardown: exit as soon as the result is out.
        os._exit(status)


def run_unrestricted(job: dict[str, object]) -> str:
    """Tests only (`ProcessConfig.unrestricted_for_tests`): the job's code as plain Python,
    with the real builtins; what it leaves in `report` comes back as the result (JSON)."""
    import io

    scope: dict[str, object] = {"__name__": "__unrestricted__"}
    out = io.StringIO()
    result = blank_result()
    try:
        with contextlib.redirect_stdout(out):
            exec(str(job.get("code", "")), scope)  # noqa: S102 - the point of this mode
        result["result"] = json.dumps(scope.get("report"), default=repr)
    except BaseException as exc:
        error = {"type": type(exc).__name__, "message": str(exc)[:2000], "line": None}
        result.update(ok=False, error=error)
    result["stdout"] = out.getvalue()[:100_000]
    return json.dumps(result)


def _report(sock: socket.socket, exc: BaseException) -> None:
    """The runner itself failed (not the snippet: the runner reports the snippet's own
    errors): say what happened, rather than leave the worker to guess from the silence
    (memory, CPU time, a crash)."""
    error = {
        "type": "SandboxError",
        "message": f"The sandbox could not run the snippet ({type(exc).__name__}: {exc})."[:2000],
        "line": None,
    }
    with contextlib.suppress(BaseException):
        sock.sendall(json.dumps(blank_result(error)).encode())
        sock.shutdown(socket.SHUT_WR)


def main() -> NoReturn:
    """Cold mode: `python -m worker.sandbox.child <fd> <plan json>`."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    plan = isolation.Plan(**json.loads(sys.argv[2]))
    runner_main.prepare(warm=False)
    isolate_and_serve(sock, plan, warm_up=None, warm_data_fd=None)


if __name__ == "__main__":
    main()
