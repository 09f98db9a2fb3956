"""Linux isolation for one sandbox process, applied to itself right after it is forked.

Order matters:
1. its own session/process group (the parent kills the whole group at the deadline) and
   death with its parent;
2. new network (no interface but a down loopback), mount, IPC, UTS and PID namespaces —
   through a user namespace when not running as root; the sandbox is PID 1 of its PID
   namespace, so whatever it starts dies with it and no host process can be named;
3. a new root: a size-capped tmpfs holding read-only binds of only what Python needs (the
   interpreter, site-packages, system libraries), a fresh writable `/quarry-work` and `/tmp`, and
   `/dev/null`, `/dev/zero`, `/dev/urandom`; the old root is detached, so nothing else of
   the host's filesystem (the data directory, `/etc/passwd`, the worker's source) exists;
4. resource limits: processes, open files, file size, no core dumps (address space and CPU
   follow per job);
5. an unprivileged user (a uid per pool slot when running as root), no new privileges;
6. the seccomp filter (`worker/sandbox/seccomp.py`): no program, no process but threads, no
   socket but AF_UNIX, no ptrace, mount, namespace or kernel-module call — whatever code
   the snippet reaches, the kernel refuses them.

Only the standard library and libc are used (via ctypes; libseccomp for the filter), so it
runs before anything else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from worker.sandbox import seccomp

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

# Where each sandbox builds its root (inside its own mount namespace: invisible to others).
ROOT_MOUNTPOINT = Path("/tmp/quarry-sandbox-root")  # noqa: S108 - an empty mount point only
# The sandbox's writable working directory (a path no host directory we bind can be under).
WORKDIR = "/quarry-work"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_SYS_PIVOT_ROOT = {"aarch64": 41, "arm64": 41}.get(os.uname().machine, 155)  # x86_64: 155
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class IsolationError(RuntimeError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise IsolationError(f"{what}: {os.strerror(err)} (errno {err})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


@dataclass
class Plan:
    """What a sandbox sees and may do; built once in the parent, applied in each child."""

    read_only: list[str] = field(default_factory=list)  # host paths bound read-only
    uid: int | None = None  # drop to this uid/gid (when running as root)
    gid: int | None = None
    workdir_mb: int = 64
    max_processes: int = 32
    max_open_files: int = 256
    max_file_mb: int = 64
    namespaces: bool = True
    seccomp: bool = True


def default_read_only_paths() -> list[str]:
    """The interpreter and its libraries: the Python prefixes, every directory on sys.path
    that holds installed packages, and the system library directories. Not the working
    directory, not the repository, not the data directory."""
    candidates: list[str] = [sys.base_prefix, sys.prefix, sys.exec_prefix]
    candidates += [e for e in sys.path if "site-packages" in e or "dist-packages" in e]
    for system in ("/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime"):
        candidates.append(system)
    paths: list[str] = []
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if os.path.exists(real) and real not in paths:
            paths.append(real)
    # Drop paths nested in another one (a bind of the parent covers them).
    return sorted(p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths))


def probe(plan: Plan) -> str | None:
    """Why full isolation is not possible here, or None when it is. Forks a throwaway
    child that tries the real thing."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked probe
        os.close(reader)
        try:
            enter(plan, keep_fds=(writer,))
            os.write(writer, b"ok")
        except BaseException as exc:
            os.write(writer, str(exc).encode()[:500])
        os._exit(0)
    os.close(writer)
    answer = b""
    while chunk := os.read(reader, 4096):
        answer += chunk
    os.close(reader)
    _, status = os.waitpid(pid, 0)
    if answer == b"ok":
        return None
    return answer.decode(errors="replace") or f"probe died ({_ended(status)})"


def _ended(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def enter(plan: Plan, keep_fds: tuple[int, ...] = ()) -> None:
    """Isolate the calling process. Irreversible: call it in a fresh child only."""
    os.setsid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if plan.namespaces:
        uid, gid = os.getuid(), os.getgid()
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
        # PID 1 already: the zygote forked us into a PID namespace of our own
        # (`PidNamespaces`). Otherwise make one now and continue as its PID 1 — before
        # the descriptors are closed below: libraries' fork handlers may use theirs
        # (Arrow aborts in a fork after its self-pipe was closed under it).
        own_pid_namespace = os.getpid() == 1
        if not own_pid_namespace:
            flags |= CLONE_NEWPID
        if uid != 0:
            flags |= CLONE_NEWUSER
        _check(_libc.unshare(flags), "unshare")
        if uid != 0:
            _map_user(uid, gid)
        if not own_pid_namespace:
            _continue_as_pid_one()
    # Standard streams go nowhere: the result travels on the job socket only.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _close_fds(keep_fds)
    if plan.namespaces:
        _new_root(plan)
    else:
        _fresh_directory()
    _limits(plan)
    _drop_privileges(plan)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_DUMPABLE, 0)
    if plan.seccomp:  # last: the steps above make calls it denies
        seccomp.install()


class PidNamespaces:
    """Children forked with `PidNamespaces().fork()` start their own PID namespace, as its
    PID 1. When a sandbox's PID 1 ends, the kernel kills everything left in its namespace:
    a process the snippet managed to start, detached with setsid(), dies with it instead of
    living on under the slot's uid. And from inside, no process of the host can be named
    (kill(pid, 0) probes nothing). Needs CAP_SYS_ADMIN (the zygote running as root); where
    it is missing each child makes its own namespace instead (`enter`), at one extra fork."""

    def __init__(self) -> None:
        self._own: int | None = None
        try:
            fd = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        if _libc.setns(fd, CLONE_NEWPID) == 0 and _libc.unshare(CLONE_NEWPID) == 0:
            self._own = fd
            self._reset()
        else:
            os.close(fd)

    @property
    def available(self) -> bool:
        return self._own is not None

    def _reset(self) -> None:
        assert self._own is not None
        _check(_libc.setns(self._own, CLONE_NEWPID), "setns pid")

    def fork(self) -> int:
        """os.fork(), the child starting a PID namespace of its own."""
        if self._own is None:
            return os.fork()
        # unshare(CLONE_NEWPID) works once per namespace we are in: go back to our own
        # first, so that every fork gets a new one (microseconds each).
        self._reset()
        _check(_libc.unshare(CLONE_NEWPID), "unshare pid")
        pid = os.fork()
        if pid:
            self._reset()
        return pid


def _continue_as_pid_one() -> None:
    """After unshare(CLONE_NEWPID): fork; the child is PID 1 of the new namespace and
    carries on, this process only waits for it and exits with its status. Both share the
    process group the parent kills, and the child dies with this process."""
    pid = os.fork()
    if pid == 0:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    _close_fds(())
    status = 70
    while True:
        try:
            _, raw = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        status = os.waitstatus_to_exitcode(raw)
        status = status if status >= 0 else 128 - status
        break
    os._exit(status)


def _map_user(uid: int, gid: int) -> None:
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")


def _new_root(plan: Plan) -> None:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = str(ROOT_MOUNTPOINT)
    os.makedirs(root, mode=0o755, exist_ok=True)
    _mount("quarry", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for writable, size in ((WORKDIR, plan.workdir_mb), ("/tmp", 16)):  # noqa: S108
        os.makedirs(root + writable, exist_ok=True)
        owner = f",uid={plan.uid},gid={plan.gid}" if plan.uid is not None else ""
        _mount(
            "quarry",
            root + writable,
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            f"size={size}m,mode=0700{owner}",
        )
    for path in plan.read_only:
        target = root + path
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).touch()
        _mount(path, target, None, MS_BIND | MS_REC)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    # merged-/usr systems reach /lib and /bin through symlinks
    for link in ("lib", "lib64", "bin", "sbin"):
        host = "/" + link
        if os.path.islink(host) and not os.path.exists(root + host):
            os.symlink(os.readlink(host), root + host)
    # the time zone: a symlink into /usr/share/zoneinfo (bound with /usr)
    if os.path.islink("/etc/localtime") and not os.path.lexists(root + "/etc/localtime"):
        os.makedirs(root + "/etc", exist_ok=True)
        os.symlink(os.readlink("/etc/localtime"), root + "/etc/localtime")
    os.makedirs(root + "/dev", exist_ok=True)
    for device in ("null", "zero", "urandom", "random"):
        target = f"{root}/dev/{device}"
        Path(target).touch()
        _mount(f"/dev/{device}", target, None, MS_BIND)
    os.makedirs(root + "/.old", exist_ok=True)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, root.encode(), (root + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(WORKDIR)


def _fresh_directory() -> None:
    import tempfile

    os.chdir(tempfile.mkdtemp(prefix="quarry-sbx-"))


def _limits(plan: Plan) -> None:
    def cap(kind: int, value: int) -> None:
        _soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))

    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, plan.max_open_files)
    cap(resource.RLIMIT_FSIZE, plan.max_file_mb << 20)
    if plan.uid is not None or os.getuid() != 0:
        # Counted per user: meaningful for the sandbox's own uid, not for root.
        cap(resource.RLIMIT_NPROC, plan.max_processes)


def apply_job_limits(memory_bytes: int, cpu_seconds: int) -> None:
    """Per job, once the job is known: address space and CPU time (on top of what the
    process already used starting up)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    for kind, value in (
        (resource.RLIMIT_AS, memory_bytes),
        (resource.RLIMIT_CPU, used + cpu_seconds),
    ):
        _soft, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


def _drop_privileges(plan: Plan) -> None:
    if os.getuid() != 0 or plan.uid is None:
        return
    gid = plan.gid if plan.gid is not None else plan.uid
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(plan.uid, plan.uid, plan.uid)
    if os.getuid() == 0 or os.geteuid() == 0:  # pragma: no cover - defensive
        raise IsolationError("could not drop root")


def _close_fds(keep: tuple[int, ...]) -> None:
    keep_set = set(keep) | {0, 1, 2}
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep_set:
            try:
                os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
