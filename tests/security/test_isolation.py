"""The OS layer on its own: what a snippet could do had it got past the language layer.

`isolated()` forks a child of this test process, isolates it exactly as a sandbox child
isolates itself (`worker.sandbox.isolation.enter` with the backend's plan, then the
per-job limits) and runs raw Python in it — every module, the real builtins, no
RestrictedPython. Tests of one layer turn the seccomp filter off (`seccomp=False`) to show
that the namespaces and limits hold on their own; test_seccomp.py shows the filter's part.
The facts a snippet sees from inside are its report. The warm pool's
processes are also read from the host (/proc), where a snippet cannot lie about them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.security.conftest import (
    SECRET_MARKERS,
    WORKER_SOURCE,
    Listener,
    Sandbox,
    pool_children,
    processes,
)
from worker.sandbox import isolation

RAW_UID = 63990  # uids of the suite's range no pool child gets in a run
FORK_BOMB_UID, SIGNALS_UID, SETSID_UID = 63991, 63992, 63993


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def isolated(
    code: str,
    uid: int = RAW_UID,
    *,
    seccomp: bool = True,
    namespaces: bool = True,
    **names: Any,
) -> dict[str, Any]:
    """Run `code` (which sets `report`) in a freshly isolated child; its report ({} when
    the child died before it could give one)."""
    plan = isolation.Plan(
        read_only=isolation.default_read_only_paths(),
        uid=uid,
        gid=uid,
        seccomp=seccomp,
        namespaces=namespaces,
    )
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the isolated child
        try:
            baseline = _vm_bytes()
            isolation.enter(plan, keep_fds=(writer,))
            isolation.apply_job_limits(memory_bytes=baseline + (512 << 20), cpu_seconds=20)
            scope: dict[str, Any] = dict(names)
            exec(textwrap.dedent(code), scope)  # noqa: S102 - the point of the test
            out = json.dumps(scope["report"])
        except BaseException as exc:
            out = json.dumps({"crashed": repr(exc)})
        os.write(writer, out.encode()[:60000] + b"\n")
        os._exit(0)
    os.close(writer)
    try:
        # One line: processes the child started may hold the pipe open after it.
        with os.fdopen(reader) as pipe:
            report = json.loads(pipe.readline() or "{}")
    finally:
        # What the backend does when a job ends: kill the child's whole process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert "crashed" not in report, report
    return report


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _left_running(uid: int) -> list[int]:
    """Host pids of live processes running as `uid` (a sandbox reports pids of its own
    PID namespace, which mean nothing out here)."""
    return [pid for pid, (owner, _) in processes().items() if owner == uid and _alive(pid)]


def test_the_filesystem_holds_only_the_interpreter_and_libraries() -> None:
    report = isolated(
        """
        import os
        report = {
            "root": sorted(os.listdir("/")),
            "etc": sorted(os.listdir("/etc")),
            "dev": sorted(os.listdir("/dev")),
            "tmp": os.listdir("/tmp"),
            "cwd": os.getcwd(),
            "work": sorted(os.listdir("/work/main")) if os.path.isdir("/work/main") else None,
            "proc": os.path.exists("/proc/self"),
        }
        for name, path in [("passwd", "/etc/passwd"), ("source", SOURCE),
                           ("environ", "/proc/self/environ"), ("shadow", "/etc/shadow")]:
            try:
                open(path).read()
                report[name] = "read"
            except OSError as exc:
                report[name] = type(exc).__name__
        for name, path in [("write_usr", "/usr/quarry-evil"), ("write_root", "/quarry-evil"),
                           ("write_venv", SOURCE + ".evil")]:
            try:
                open(path, "w").close()
                report[name] = "written"
            except OSError as exc:
                report[name] = exc.errno
        """,
        SOURCE=str(WORKER_SOURCE),
    )
    # Only what the dynamic loader and time zones need (no passwd, no hosts, no resolv.conf).
    assert "ld.so.cache" in report["etc"]
    assert set(report["etc"]) <= {"ld.so.cache", "localtime"}
    assert report["dev"] == ["null", "random", "urandom", "zero"]
    # A private, empty /tmp; when the interpreter itself lives under /tmp (a checkout
    # there), the read-only bind of it is the only thing that shows.
    interpreter_under_tmp = {
        Path(p).relative_to("/tmp").parts[0]
        for p in isolation.default_read_only_paths()
        if p.startswith("/tmp/")
    }
    assert set(report["tmp"]) == interpreter_under_tmp
    assert report["cwd"] == "/quarry-work"
    assert "home" not in report["root"]
    assert "proc" not in report["root"]
    assert report["proc"] is False
    if report["work"] is not None:  # the virtualenv lives under the repository here
        assert report["work"] == [".venv"]
    for name in ("passwd", "source", "environ", "shadow"):
        assert report[name] == "FileNotFoundError"
    assert report["write_usr"] == 30  # EROFS: the libraries are read-only
    assert report["write_root"] == 30
    assert report["write_venv"] == 2  # ENOENT: the worker's source is not there at all
    assert not Path("/usr/quarry-evil").exists()
    assert not Path("/quarry-evil").exists()


def test_the_network_namespace_has_no_way_out(listener: Listener) -> None:
    """The namespace alone (the filter refuses AF_INET sockets before they get this far)."""
    report = isolated(
        """
        import socket
        report = {"interfaces": [name for _, name in socket.if_nameindex()]}
        attempts = {
            "tcp_listener": lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2),
            "tcp_public": lambda: socket.create_connection(("1.1.1.1", 53), timeout=2),
            "dns": lambda: socket.getaddrinfo("example.com", 80),
            "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                b"x", ("127.0.0.1", PORT)),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                report[name] = "connected"
            except OSError as exc:
                report[name] = type(exc).__name__ + ":" + str(exc.errno)
        """,
        PORT=listener.port,
        seccomp=False,
    )
    assert report["interfaces"] == ["lo"]
    assert report["tcp_listener"] == "OSError:101"  # ENETUNREACH: loopback is down
    assert report["tcp_public"] == "OSError:101"
    assert report["dns"].startswith("gaierror")
    assert report["udp"] == "OSError:101"
    time.sleep(0.2)
    assert listener.connections == 0


def test_the_snippet_runs_unprivileged_and_cannot_get_privileges_back() -> None:
    report = isolated(
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        report = {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
                  "pid": os.getpid(),
                  "groups": os.getgroups(),
                  "no_new_privs": libc.prctl(39, 0, 0, 0, 0)}
        for name, attempt in [("setuid", lambda: os.setuid(0)),
                              ("chroot", lambda: os.chroot("/tmp")),
                              ("kill_host", lambda: os.kill(HOST_PID, 0))]:
            try:
                attempt()
                report[name] = "allowed"
            except OSError as exc:
                report[name] = type(exc).__name__
        report["unshare"] = libc.unshare(0x10000000) == 0 or ctypes.get_errno()
        report["mount"] = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0 or ctypes.get_errno()
        """,
        HOST_PID=os.getpid(),
    )
    assert report["ids"] == [RAW_UID] * 4
    assert report["groups"] == []
    assert report["no_new_privs"] == 1
    assert report["setuid"] == "PermissionError"
    assert report["chroot"] == "PermissionError"
    # PID 1 of its own PID namespace: no process of the host can even be named.
    assert report["pid"] == 1
    assert report["kill_host"] == "ProcessLookupError"
    assert report["unshare"] == 1  # EPERM: no new user namespace either
    assert report["mount"] == 1


def test_limits_are_set_and_cannot_be_raised() -> None:
    report = isolated(
        """
        import resource
        names = ["RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE",
                 "RLIMIT_AS", "RLIMIT_CPU"]
        report = {name: list(resource.getrlimit(getattr(resource, name))) for name in names}
        for name in names:
            kind = getattr(resource, name)
            soft, hard = resource.getrlimit(kind)
            for label, wanted in [("soft", (hard + 1, hard)),
                                  ("hard", (soft, resource.RLIM_INFINITY))]:
                try:
                    resource.setrlimit(kind, wanted)
                    report[name + "_raise_" + label] = "raised"
                except (ValueError, OSError) as exc:
                    report[name + "_raise_" + label] = type(exc).__name__
        """
    )
    assert report["RLIMIT_NPROC"] == [32, 32]
    assert report["RLIMIT_NOFILE"] == [256, 256]
    assert report["RLIMIT_FSIZE"] == [64 << 20, 64 << 20]
    assert report["RLIMIT_CORE"] == [0, 0]
    assert report["RLIMIT_AS"][0] == report["RLIMIT_AS"][1] > 0
    assert report["RLIMIT_CPU"][0] == report["RLIMIT_CPU"][1] > 0
    for name in ("NPROC", "NOFILE", "FSIZE", "CORE", "AS", "CPU"):
        assert report[f"RLIMIT_{name}_raise_soft"] == "ValueError"
        assert report[f"RLIMIT_{name}_raise_hard"] == "ValueError"


def test_a_fork_bomb_is_capped_and_dies_with_the_sandbox() -> None:
    """RLIMIT_NPROC and the PID namespace, without the filter (which refuses every fork)."""
    report = isolated(
        """
        import os, time
        started, error = [], None
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError as exc:
                error = type(exc).__name__ + ":" + str(exc.errno)
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            started.append(pid)
        report = {"started": len(started), "error": error, "pids": started}
        """,
        uid=FORK_BOMB_UID,
        seccomp=False,  # the limits and the PID namespace alone: the filter refuses fork
    )
    assert report["error"] == "BlockingIOError:11"  # EAGAIN: RLIMIT_NPROC
    assert 0 < report["started"] < 32
    time.sleep(0.3)
    assert _left_running(FORK_BOMB_UID) == []


def test_filling_the_disk_stops_at_the_sandbox_quotas() -> None:
    before = shutil.disk_usage("/tmp").used
    report = isolated(
        """
        import os
        report = {}
        for name, path in [("tmp", "/tmp/fill"), ("work", "/quarry-work/fill")]:
            written = 0
            try:
                with open(path, "wb") as sink:
                    while written < (1 << 30):
                        sink.write(b"\\0" * (1 << 20))
                        written += 1 << 20
                    sink.flush()
                report[name] = "no limit"
            except OSError as exc:
                report[name] = exc.errno
            report[name + "_mb"] = written >> 20
            os.remove(path)
        """
    )
    assert report["tmp"] == 28  # ENOSPC: /tmp is a 16 MB tmpfs
    assert report["tmp_mb"] <= 16
    assert report["work"] in (27, 28)  # EFBIG (RLIMIT_FSIZE) or ENOSPC: 64 MB either way
    assert report["work_mb"] <= 64
    assert abs(shutil.disk_usage("/tmp").used - before) < 50 << 20


def test_a_process_ignoring_signals_still_dies_at_the_deadline() -> None:
    report = isolated(
        """
        import os, signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM,
                    signal.SIGXCPU, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        child = os.fork()
        if child == 0:
            while True:
                pass
        report = {"child": child}
        """,
        uid=SIGNALS_UID,
        seccomp=False,  # the limits and the PID namespace alone: the filter refuses fork
    )
    # isolated() killed the process group, as the backend does at the deadline.
    assert report["child"] > 1  # its pid inside the sandbox's own PID namespace
    time.sleep(0.3)
    assert _left_running(SIGNALS_UID) == []


def test_a_process_that_leaves_the_process_group_dies_with_the_sandbox() -> None:
    """setsid() takes a process out of the group the backend kills; the PID namespace,
    whose PID 1 is the sandbox, ends it all the same."""
    report = isolated(
        """
        import os, time
        child = os.fork()
        if child == 0:
            os.setsid()
            time.sleep(30)
            os._exit(0)
        time.sleep(0.2)
        report = {"child": child}
        """,
        uid=SETSID_UID,
        seccomp=False,  # the limits and the PID namespace alone: the filter refuses fork
    )
    assert report["child"] > 1
    time.sleep(0.5)
    escaped = _left_running(SETSID_UID)
    for pid in escaped:
        os.kill(pid, signal.SIGKILL)
    assert escaped == []


def test_the_warm_pool_holds_no_secret_and_lives_in_its_own_namespaces(
    sandbox: Sandbox,
) -> None:
    """From the host: the zygote and every waiting child have a scrubbed environment, and
    each child its own network, mount, IPC, UTS and PID namespaces (as their PID 1) and
    its own root."""
    sandbox.run("1")
    zygote = sandbox.backend._zygote
    assert zygote is not None
    children = pool_children(sandbox.backend)
    assert children
    for pid in [zygote.pid, *children]:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert not [marker for marker in SECRET_MARKERS if marker in environ]
        assert "DATABASE_URL" not in environ
        assert "JWT_SECRET_KEY" not in environ
    for pid in children:
        for space in ("net", "mnt", "ipc", "uts", "pid"):
            assert os.readlink(f"/proc/{pid}/ns/{space}") != os.readlink(f"/proc/self/ns/{space}")
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"NSpid:\t{pid}\t1\n" in status  # PID 1 of a namespace of its own
        root = sorted(os.listdir(f"/proc/{pid}/root"))
        assert "quarry-work" in root
        assert "home" not in root
        assert set(os.listdir(f"/proc/{pid}/root/etc")) <= {"ld.so.cache", "localtime"}
    pid_spaces = {os.readlink(f"/proc/{pid}/ns/pid") for pid in children}
    assert len(pid_spaces) == len(children)
