"""The audit hook (PEP 578): what a snippet's call stack may do, whichever library it goes
through.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from typing import Any

from runner.policy.modules import SNIPPET_FILENAME, PolicyError
from runner.policy.rules import _NO_FILES

# --- the audit hook: what a snippet's call stack may do, whichever library it goes through ------

# Whatever library function a snippet calls, what it makes happen in the process is
# checked here: Python raises an audit event for every file opened, directory listed,
# socket made, process started, pickle global resolved... (PEP 578). While code compiled
# from the snippet is on the stack, those that reach outside the sandbox are refused; the
# libraries' own imports (reading their files) stay allowed. Native code that does I/O
# without Python (pyarrow's file system, Fortran) is not seen here: the library rules
# above refuse its entry points.
_BLOCKED_EVENTS = frozenset(
    {
        "builtins.input",
        "builtins.breakpoint",
        "code.__new__",
        "function.__new__",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "pickle.find_class",
        "marshal.load",
        "sys.addaudithook",
        "sys.settrace",
        "sys.setprofile",
        "sys._current_frames",
        "sys._current_exceptions",
        "ctypes.addressof",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.set_errno",
        "ctypes.set_exception",
        "os.system",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.kill",
        "os.killpg",
        "os.chdir",
        "os.chmod",
        "os.chown",
        "os.chflags",
        "os.lchflags",
        "os.link",
        "os.symlink",
        "os.mkdir",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.truncate",
        "os.utime",
        "os.setxattr",
        "os.removexattr",
        "os.startfile",
        "os.add_dll_directory",
        "resource.setrlimit",
        "resource.prlimit",
        "signal.pthread_kill",
    }
)
# Whole families: sockets, URLs, processes, temporary files...
_BLOCKED_FAMILIES = frozenset(
    {
        "socket",
        "subprocess",
        "_posixsubprocess",
        "multiprocessing",
        "pty",
        "webbrowser",
        "urllib",
        "http",
        "ftplib",
        "smtplib",
        "poplib",
        "imaplib",
        "nntplib",
        "telnetlib",
        "ssl",
        "shutil",
        "tempfile",
        "glob",
        "sqlite3",
        "syslog",
        "fcntl",
        "msvcrt",
        "winreg",
        "_winapi",
        "cpython",
    }
)
# Events about a path: allowed only to read the interpreter's and the libraries' files.
_PATH_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "os.getxattr", "os.listxattr"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_decisions: dict[str, str] = {}  # event -> "block" | "path" | "dlopen" | ""


class SandboxRefusal(PolicyError, PermissionError):
    """An effect outside the sandbox, refused while the snippet runs. Also a
    PermissionError, so that a library that handles a refused file carries on as it
    would with an unreadable one."""


# Read by the libraries to size themselves (joblib reads the CPU quota, threadpoolctl the
# loaded libraries, pandas the time zones); nothing secret, and absent inside the process
# sandbox (not in a container).
_SYSTEM_FACTS = ("/usr/share/zoneinfo", "/sys/fs/cgroup", "/sys/devices/system/cpu")
_SYSTEM_FILES = frozenset({"/proc/self/maps", "/proc/cpuinfo", "/proc/meminfo", "/etc/localtime"})


def library_roots() -> tuple[str, ...]:
    """Directories a snippet's libraries may read from: the interpreter's prefixes and
    the installed packages (never the working directory, the worker's source or data)."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, *_SYSTEM_FACTS}
    paths.update(p for p in sys.path if "site-packages" in p or "dist-packages" in p)
    return tuple(sorted({os.path.realpath(p) + os.sep for p in paths if p}))


# Shared libraries may also be loaded from the system's library directories.
_LIBRARY_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/")
_roots: tuple[str, ...] = ()


_job_threads: list[int] = []  # the thread a sandbox's job runs on, once `one_job()` said so


def one_job() -> None:
    """This process runs one snippet from now on (a sandbox child, `python -m runner`):
    any other Python thread is the snippet's. Nothing in the runner or its libraries starts
    one during a job, so a thread can only come from code that got past the language layer
    (`_thread.start_new_thread(os.system, ...)` runs no snippet frame), and what it does is
    judged as the snippet's own."""
    _job_threads[:] = [threading.get_ident()]


def _on_snippet_stack() -> bool:
    if _job_threads and threading.get_ident() != _job_threads[0]:
        return True
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == SNIPPET_FILENAME:
            return True
        frame = frame.f_back
    return False


def _readable(path: Any, roots: tuple[str, ...], files: frozenset[str] = frozenset()) -> bool:
    """Whether `path` (a name, not a descriptor) is under one of `roots` or is one of
    `files`, once `..` and symbolic links are resolved."""
    if isinstance(path, int) or path is None:
        return False
    try:
        # an exact str: a subclass could answer startswith() or == as it likes
        text = str.__str__(os.fsdecode(os.fspath(path)))
    except TypeError:
        return False
    if os.path.abspath(text) in files:
        return True
    return (os.path.realpath(text) + os.sep).startswith(roots)


def _decide(event: str) -> str:
    decision = _decisions.get(event)
    if decision is None:
        if event in _BLOCKED_EVENTS or event.split(".", 1)[0] in _BLOCKED_FAMILIES:
            decision = "block"
        elif event in _PATH_EVENTS:
            decision = "path"
        elif event == "ctypes.dlopen":
            decision = "dlopen"
        else:
            decision = ""
        _decisions[event] = decision
    return decision


def _audit(event: str, args: tuple[Any, ...]) -> None:
    decision = _decisions.get(event)
    if decision == "":
        return
    if decision is None:
        decision = _decide(event)
        if not decision:
            return
    if not _on_snippet_stack():
        return
    if decision == "block":
        raise SandboxRefusal(
            f"{_EVENT_WORDS.get(event.split('.', 1)[0], event)} is not available "
            f"in the sandbox ({event}). {_NO_FILES}"
        )
    path = args[0] if args else None
    if decision == "dlopen":
        # A bare name (or None, the program itself) is looked up by the loader in the
        # system's directories; a path must be one of the installed libraries.
        if path is None or (isinstance(path, str) and "/" not in path):
            return
        if not _readable(path, _roots + _LIBRARY_DIRS):
            raise SandboxRefusal(
                f"Loading native code from {path!r} is not available in the sandbox. {_NO_FILES}"
            )
        return
    if event == "open":
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or flags & _WRITE_FLAGS
        if not writing and _readable(path, _roots, _SYSTEM_FILES):
            return
        what = "Writing files" if writing else "Reading files"
    else:
        if _readable(path, _roots):
            return
        what = "Listing directories"
    shown = path if isinstance(path, str | bytes | int) else type(path).__name__
    raise SandboxRefusal(f"{what} is not available in the sandbox ({shown!r}). {_NO_FILES}")


_EVENT_WORDS = {
    "open": "Opening files",
    "socket": "The network",
    "urllib": "The network",
    "http": "The network",
    "subprocess": "Starting processes",
    "multiprocessing": "Starting processes",
    "_posixsubprocess": "Starting processes",
    "os": "This operating system call",
    "pickle": "Unpickling",
    "marshal": "Loading marshalled code",
    "ctypes": "Raw memory access",
    "gc": "The garbage collector's object lists",
    "sys": "Changing the interpreter",
    "shutil": "Changing files",
    "tempfile": "Temporary files",
    "resource": "Changing resource limits",
}

_hook_installed = False


def install_audit_hook() -> None:
    """Once per process (audit hooks cannot be removed; they only act while snippet code
    is on the stack)."""
    global _hook_installed, _roots
    if _hook_installed:
        return
    _roots = library_roots()
    _audit_spawns()
    sys.addaudithook(_audit)
    _hook_installed = True


def _audit_spawns() -> None:
    """multiprocessing starts its helpers (resource tracker, fork server, spawned workers)
    through `_posixsubprocess` directly, which raises no audit event: make it raise one;
    and its pools and queues start with a semaphore: refuse them there, before anything
    is started (scipy's `workers=2`)."""
    try:
        import multiprocessing.synchronize as synchronize
        import multiprocessing.util as util
    except ImportError:  # pragma: no cover - no multiprocessing on this platform: nothing to do
        return

    spawn = util.spawnv_passfds

    def spawnv_passfds(path: Any, args: Any, passfds: Any) -> Any:
        sys.audit("os.posix_spawn", path, args, None)
        return spawn(path, args, passfds)

    util.spawnv_passfds = spawnv_passfds
    init = synchronize.SemLock.__init__

    def semlock_init(self: Any, *args: Any, **kwargs: Any) -> None:
        sys.audit("multiprocessing.SemLock", *args)
        init(self, *args, **kwargs)

    synchronize.SemLock.__init__ = semlock_init  # type: ignore[method-assign]
