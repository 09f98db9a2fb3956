"""The system calls a sandbox may not make: one policy, three forms.

Analysis code reads the datasets it was handed, computes, and writes a result to a socket it
already holds. It never needs to start a program, look into another process, load kernel
code, change what is mounted, enter or make namespaces, or open a network socket. Those calls
are what an escape from the language layer (RestrictedPython) would use next, so the kernel
refuses them whatever the snippet has reached:

- `install()` loads the filter into the calling process (the process backend's children, after
  their namespaces and root are in place and NO_NEW_PRIVS is set), built with libseccomp
  through `pyseccomp`;
- `docker_profile()` writes the same policy as an OCI/Docker seccomp profile, for the docker
  backend's containers and the Kubernetes Job's `Localhost` profile (helm/quarry ships it).

The policy is a deny list over the runtime's defaults, not an allow list: which calls CPython,
numpy/OpenBLAS, pandas, pyarrow, scikit-learn/joblib and plotly make was measured with
`strace -f -c python -m runner < job.json` over a job that groups, resamples, charts and
fits (docs/SECURITY.md lists what it saw), and an allow list would break on the next library
release's new call while the deny list closes the calls an attacker needs. A denied
call fails with EPERM ("Operation not permitted"); `clone3` fails with ENOSYS, so that the C
library falls back to `clone`, whose flags a filter can read (threads yes, processes and
namespaces no). System calls of another architecture (the 32-bit ABI on x86-64, x32) kill
the process: libseccomp's default for a foreign architecture, kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

# Starting programs and processes. Threads (clone with CLONE_THREAD) stay allowed.
PROGRAMS = ("execve", "execveat", "fork", "vfork")
# Looking into or controlling other processes.
PROCESSES = ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd")
# Kernel interfaces analysis code never uses, each a common first step of a kernel exploit.
KERNEL = (
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "lookup_dcookie",
    "personality",
    "uselib",
    "iopl",
    "ioperm",
    "syslog",
    "vhangup",
    "quotactl",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
)
# Mounts, roots and namespaces: the jail is built before the filter and stays as it is.
JAIL = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "sethostname",
    "setdomainname",
)
# The clock is the host's.
CLOCK = ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex")
DENIED = PROGRAMS + PROCESSES + KERNEL + JAIL + CLOCK

# Sockets: only AF_UNIX (the job's own socket is one; Python's own machinery may make more).
# No network, no raw or packet sockets, no netlink.
SOCKET_CALLS = ("socket", "socketpair")
# clone: a thread carries CLONE_THREAD; a new process does not, nor a namespace.
CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


class SeccompUnavailable(RuntimeError):
    """The filter cannot be installed here (no libseccomp, or a kernel without seccomp)."""


@dataclass(frozen=True)
class Rule:
    """One denied call: by name, with an argument test or none (always denied)."""

    syscall: str
    errno_: int = errno.EPERM
    # (argument index, comparison, value, mask) — the call is denied when the test holds
    arg: tuple[int, str, int, int] | None = None


def rules() -> list[Rule]:
    found = [Rule(name) for name in DENIED]
    for name in SOCKET_CALLS:
        found.append(Rule(name, errno.EAFNOSUPPORT, (0, "NE", socket.AF_UNIX, 0)))
    # a process, not a thread; then: any namespace flag, thread or not
    found.append(Rule("clone", errno.EPERM, (0, "MASKED_EQ", 0, CLONE_THREAD)))
    found.append(Rule("clone", errno.EPERM, (0, "MASKED_NE", 0, CLONE_NAMESPACES)))
    found.append(Rule("clone3", errno.ENOSYS))
    return found


def available() -> str | None:
    """Why the filter cannot be installed here, or None when it can."""
    try:
        import pyseccomp  # noqa: F401 - loads libseccomp
    except (ImportError, OSError, RuntimeError) as exc:
        return f"seccomp is unavailable ({exc}); install libseccomp2"
    return None


_program: list[bytes] = []  # the compiled BPF program, built once per process (`prepare`)
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def prepare() -> None:
    """Compile the filter now (the warm pool's zygote, before it forks): each child then
    only hands the kernel the same BPF program, with one prctl. Raises SeccompUnavailable."""
    if _program:
        return
    flt = _build()
    with tempfile.TemporaryFile() as sink:
        try:
            flt.export_bpf(sink)
        except OSError as exc:
            raise SeccompUnavailable(f"the seccomp filter could not be built ({exc})") from exc
        sink.seek(0)
        _program.append(sink.read())


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> None:
    """Load the filter into this process (irreversible; its threads and children inherit
    it). Needs NO_NEW_PRIVS (or CAP_SYS_ADMIN). Raises SeccompUnavailable."""
    prepare()
    program = _program[0]
    instructions = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(instructions, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompUnavailable(f"the seccomp filter could not be loaded ({os.strerror(err)})")


def _build() -> Any:
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as exc:
        raise SeccompUnavailable(f"seccomp is unavailable ({exc})") from exc
    ops = {"NE": sc.NE, "MASKED_EQ": sc.MASKED_EQ}
    try:
        flt = sc.SyscallFilter(sc.ALLOW)
        # a binary tree of the rules, not a list: every allowed call (most of them) pays
        # a few comparisons, not one per rule
        with contextlib.suppress(OSError):
            flt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
        for rule in rules():
            try:
                nr = sc.resolve_syscall(sc.system_arch(), rule.syscall)
            except (OSError, ValueError):
                continue  # not a call of this architecture (fork on arm64...)
            if nr < 0:
                continue
            action = sc.ERRNO(rule.errno_)
            if rule.arg is None:
                flt.add_rule(action, rule.syscall)
                continue
            index, op, value, mask = rule.arg
            if op == "MASKED_NE":
                # denied when any bit of `mask` is set: not (flags & mask == 0)
                for bit in _bits(mask):
                    flt.add_rule(action, rule.syscall, sc.Arg(index, sc.MASKED_EQ, bit, bit))
            elif op == "MASKED_EQ":
                flt.add_rule(action, rule.syscall, sc.Arg(index, sc.MASKED_EQ, mask, value))
            else:
                flt.add_rule(action, rule.syscall, sc.Arg(index, ops[op], value))
    except OSError as exc:
        raise SeccompUnavailable(f"the seccomp filter could not be built ({exc})") from exc
    return flt


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(64) if mask >> i & 1]


_DOCKER_OPS = {"NE": "SCMP_CMP_NE", "MASKED_EQ": "SCMP_CMP_MASKED_EQ"}


# The container runtime loads a profile before it starts the container's program, with
# execve: a profile cannot deny it. A container has no other program to start (read-only
# root, noexec /tmp) and no second process (fork, vfork and clone without CLONE_THREAD
# stay denied), so an exec could only replace the runner with itself or a shell, inside the
# same container.
RUNTIME_NEEDS = ("execve",)


def docker_profile() -> dict[str, Any]:
    """The policy as an OCI/Docker seccomp profile (also a Kubernetes `Localhost` profile):
    everything allowed but what `rules()` denies, with the same errno per call, less
    RUNTIME_NEEDS."""
    entries: list[dict[str, Any]] = []
    plain: dict[int, list[str]] = {}
    for rule in rules():
        if rule.syscall in RUNTIME_NEEDS:
            continue
        if rule.arg is None:
            plain.setdefault(rule.errno_, []).append(rule.syscall)
            continue
        index, op, value, mask = rule.arg
        if op == "MASKED_NE":
            args = [
                [{"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}]
                for bit in _bits(mask)
            ]
        elif op == "MASKED_EQ":
            args = [[{"index": index, "value": mask, "valueTwo": value, "op": _DOCKER_OPS[op]}]]
        else:
            args = [[{"index": index, "value": value, "op": _DOCKER_OPS[op]}]]
        for one in args:
            entries.append(
                {
                    "names": [rule.syscall],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": rule.errno_,
                    "args": one,
                }
            )
    for code, names in sorted(plain.items()):
        entries.insert(
            0, {"names": sorted(names), "action": "SCMP_ACT_ERRNO", "errnoRet": code, "args": []}
        )
    # no "architectures": the host's own only; a foreign one's calls meet the runtime's
    # bad-architecture action
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": entries}


def profile_json() -> str:
    """The profile as the chart ships it (helm/quarry/files/sandbox-seccomp.json)."""
    return json.dumps(docker_profile(), indent=2) + "\n"


def main() -> None:
    """`python -m worker.sandbox.seccomp` prints the docker/Kubernetes profile."""
    print(profile_json(), end="")


if __name__ == "__main__":
    main()
