"""The OS layer alone, through the real backend: unrestricted Python in a snippet's jail.

`ProcessConfig(unrestricted_for_tests=True)` — a constructor argument no setting, job or API
call reaches — makes the warm pool's children run a job's code as plain Python: the real
builtins, `open`, `os`, `ctypes`, threads, no RestrictedPython, no policy. Everything else is
the production path: the zygote, the fork, the namespaces and new root, the uid, the rlimits,
the seccomp filter, the job handed over on its socket. This is what a snippet that had beaten
the language layer completely would have, and each test shows what it still cannot do,
observed from the host where the snippet cannot lie: no program started, no connection made,
nothing read outside the jail, nothing written that outlives it, no other process touched,
no limit raised, no process left behind.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import (
    PASSWD_SENTINEL,
    SECRET_MARKERS,
    WORKER_SOURCE,
    Listener,
    processes,
)
from worker.sandbox import seccomp
from worker.sandbox.process import ProcessBackend, ProcessConfig

RAW_UID_BASE = 65000  # none of the suite's other pools use these
LIMITS = {"timeout_s": 10, "memory_mb": 512, "max_output_bytes": 2 << 20}


@pytest.fixture(scope="module")
def raw(secret_environment: dict[str, str]) -> Iterator[ProcessBackend]:
    config = ProcessConfig(
        warm=True, pool_size=1, uid_base=RAW_UID_BASE, unrestricted_for_tests=True
    )
    with ProcessBackend(config) as backend:
        yield backend


def run(backend: ProcessBackend, code: str) -> dict[str, Any]:
    """The report the code left in `report`; the whole result must hold no secret."""
    result = backend.run({"code": code, "limits": LIMITS})
    text = json.dumps(result)
    for marker in (*SECRET_MARKERS, PASSWD_SENTINEL):
        assert marker not in text
    assert result["ok"], result["error"]
    report: dict[str, Any] = json.loads(result["result"])
    return report


def left_running(backend: ProcessBackend) -> list[int]:
    """Live host processes under the pool's uids, but the children waiting for a job."""
    zygote = backend._zygote
    waiting = zygote.pid if zygote is not None else -1
    return [
        pid
        for pid, (uid, parent) in processes().items()
        if RAW_UID_BASE <= uid < RAW_UID_BASE + 1000 and parent != waiting
    ]


ATTEMPT = """
def attempt(name, action):
    try:
        value = action()
        report[name] = "allowed" if value is None else repr(value)[:200]
    except BaseException as exc:
        report[name] = type(exc).__name__ + ":" + str(getattr(exc, "errno", "") or "")
report = {}
"""


def test_the_code_really_runs_unrestricted(raw: ProcessBackend) -> None:
    report = run(
        raw,
        """
import builtins, ctypes, os
report = {
    "real_open": open is builtins.open,
    "has_ctypes": ctypes.CDLL(None) is not None,
    "uid": os.getuid(),
    "pid": os.getpid(),
}
""",
    )
    assert report["real_open"] is True
    assert report["has_ctypes"] is True
    assert RAW_UID_BASE <= report["uid"] < RAW_UID_BASE + 1000
    assert report["pid"] == 1  # PID 1 of its own PID namespace


def test_it_cannot_start_a_program(raw: ProcessBackend) -> None:
    report = run(
        raw,
        ATTEMPT
        + """
import ctypes, os, subprocess, _thread, time
attempt("system", lambda: os.system("true") or None)
attempt("subprocess", lambda: subprocess.run(["/bin/true"]))
attempt("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {}))
attempt("execv", lambda: os.execv("/bin/true", ["true"]))
attempt("fork", lambda: os.fork())
attempt("ctypes_system", lambda: ctypes.CDLL(None).system(b"true"))
box = []
def from_a_thread():
    try:
        box.append(os.system("true"))
    except BaseException as exc:
        box.append(type(exc).__name__)
_thread.start_new_thread(from_a_thread, ())
deadline = time.monotonic() + 5
while not box and time.monotonic() < deadline:
    time.sleep(0.05)
report["thread_system"] = box
""",
    )
    assert report["subprocess"] == report["posix_spawn"] == report["execv"] == "PermissionError:1"
    assert report["fork"] == "PermissionError:1"
    # os.system and libc's system() answer the shell's status: it could not be started
    assert report["system"] != "allowed"
    assert report["ctypes_system"] == repr(127 << 8)
    # refused by the audit hook (a thread off the job's is the snippet's) before the kernel
    assert report["thread_system"] == ["SandboxRefusal"]
    assert left_running(raw) == []


def test_it_cannot_reach_the_network(raw: ProcessBackend, listener: Listener) -> None:
    report = run(
        raw,
        ATTEMPT
        + f"""
import socket
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", {listener.port}), timeout=2))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
attempt("ipv6", lambda: socket.socket(socket.AF_INET6))
attempt("raw", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
""",
    )
    for name in ("tcp", "udp", "ipv6", "raw", "netlink"):
        assert report[name] == "OSError:97", (name, report[name])  # EAFNOSUPPORT
    assert report["dns"].startswith("gaierror")
    time.sleep(0.2)
    assert listener.connections == 0


def test_it_cannot_read_outside_its_jail(raw: ProcessBackend) -> None:
    report = run(
        raw,
        ATTEMPT
        + f"""
import os
attempt("passwd", lambda: open("/etc/passwd").read())
attempt("source", lambda: open({str(WORKER_SOURCE)!r}).read())
attempt("environ_file", lambda: open("/proc/self/environ").read())
attempt("parent_memory", lambda: open("/proc/1/mem", "rb").read(16))
report["environ"] = dict(os.environ)
report["root"] = sorted(os.listdir("/"))
""",
    )
    for name in ("passwd", "source", "environ_file", "parent_memory"):
        assert report[name] == "FileNotFoundError:2", (name, report[name])
    assert not set(report["environ"]) & {"DATABASE_URL", "JWT_SECRET_KEY", "OPENAI_API_KEY"}
    # what the new root holds: the interpreter and libraries, /dev, the two work folders
    assert "proc" not in report["root"]
    assert "quarry-work" in report["root"]


def test_nothing_it_writes_outlives_it(raw: ProcessBackend, tmp_path: Path) -> None:
    marker = f"quarry-raw-{os.getpid()}-{time.time_ns()}"
    first = run(
        raw,
        ATTEMPT
        + f"""
attempt("work", lambda: open("/quarry-work/{marker}", "w").write("x"))
attempt("tmp", lambda: open("/tmp/{marker}", "w").write("x"))
attempt("usr", lambda: open("/usr/{marker}", "w").write("x"))
attempt("root", lambda: open("/{marker}", "w").write("x"))
""",
    )
    assert first["work"] == first["tmp"] == "1"  # its own scratch space
    assert first["usr"] == first["root"] == "OSError:30"  # EROFS: read-only
    second = run(raw, "import os\nreport = os.listdir('/quarry-work') + os.listdir('/tmp')")
    assert marker not in second
    assert not list(Path("/tmp").glob(f"*{marker}*"))
    assert not list(Path("/").glob(f"{marker}"))


def test_it_cannot_signal_or_trace_another_process(raw: ProcessBackend) -> None:
    zygote = raw._zygote
    assert zygote is not None
    report = run(
        raw,
        ATTEMPT
        + f"""
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
attempt("kill_zygote", lambda: os.kill({zygote.pid}, signal.SIGKILL))
attempt("kill_test", lambda: os.kill({os.getpid()}, signal.SIGKILL))
report["ptrace"] = [libc.ptrace(16, {os.getpid()}, 0, 0), ctypes.get_errno()]
""",
    )
    assert report["kill_zygote"] == "ProcessLookupError:3"  # no host pid can be named
    assert report["kill_test"] == "ProcessLookupError:3"
    assert report["ptrace"] == [-1, 1]  # EPERM (seccomp)
    assert zygote.poll() is None
    assert run(raw, "report = 'still serving'") == "still serving"


def test_it_cannot_raise_its_limits_or_get_root(raw: ProcessBackend) -> None:
    report = run(
        raw,
        ATTEMPT
        + """
import os, resource
inf = resource.RLIM_INFINITY
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE"):
    kind = getattr(resource, name)
    attempt(name, lambda kind=kind: resource.setrlimit(kind, (inf, inf)))
attempt("setuid", lambda: os.setuid(0))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
report["unshare"] = [libc.unshare(0x10000000), ctypes.get_errno()]
""",
    )
    for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE"):
        assert report[name] in ("ValueError:", "PermissionError:1"), (name, report[name])
    assert report["setuid"] == "PermissionError:1"
    assert report["unshare"] == [-1, 1]  # EPERM


@pytest.mark.skipif(seccomp.available() is not None, reason="no seccomp here")
def test_it_leaves_no_process_behind(raw: ProcessBackend) -> None:
    run(
        raw,
        ATTEMPT
        + """
import os, threading, time
attempt("fork", lambda: os.fork())
threading.Thread(target=time.sleep, args=(60,), daemon=False).start()
report["threads"] = threading.active_count()
""",
    )
    deadline = time.monotonic() + 5
    while left_running(raw) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left_running(raw) == []
