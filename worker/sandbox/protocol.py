"""The wire between the worker and one sandbox process: the job (JSON) goes over a Unix
socket together with the dataset files as open descriptors (the sandbox cannot open
paths); the result (JSON) comes back on the same socket, ended by shutdown."""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FDS = 64
MAX_JOB_BYTES = 16 << 20


def send_job(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    if len(fds) > MAX_FDS:
        raise ValueError(f"at most {MAX_FDS} files per job")
    header = _HEADER.pack(len(payload))
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([header], ancillary)
    sock.sendall(payload)


def receive_job(sock: socket.socket) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    header, ancdata, _flags, _addr = sock.recvmsg(
        _HEADER.size, socket.CMSG_SPACE(MAX_FDS * fds.itemsize)
    )
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(header) != _HEADER.size:
        raise EOFError("no job")
    (length,) = _HEADER.unpack(header)
    if length > MAX_JOB_BYTES:
        raise ValueError("job too large")
    payload = bytearray()
    while len(payload) < length:
        chunk = sock.recv(min(1 << 20, length - len(payload)))
        if not chunk:
            raise EOFError("job cut short")
        payload += chunk
    return bytes(payload), list(fds)


def send_handle(control: socket.socket, fd: int, info: bytes) -> None:
    """Zygote -> worker: one ready sandbox (its socket) and a little text about it."""
    control.sendmsg([info], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def receive_handle(control: socket.socket) -> tuple[int, bytes]:
    fds = array.array("i")
    info, ancdata, _flags, _addr = control.recvmsg(256, socket.CMSG_SPACE(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: fds.itemsize])
    if not info:
        raise EOFError("zygote gone")
    if not fds:
        raise EOFError(info.decode(errors="replace"))
    return fds[0], info


def rewrite_paths(job: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The job as the sandbox will see it: every dataset and workspace path replaced by a
    descriptor placeholder; returns the opened descriptors (caller closes them)."""
    count = sum(len(job.get(key) or []) for key in ("datasets", "workspace"))
    if count > MAX_FDS:
        raise ValueError(f"{count} files in one job; at most {MAX_FDS}")
    fds: list[int] = []
    try:
        for key in ("datasets", "workspace"):
            items = []
            for item in job.get(key) or []:
                fds.append(os.open(item["path"], os.O_RDONLY | os.O_CLOEXEC))
                items.append({**item, "path": f"fd:#{len(fds) - 1}"})
            job = {**job, key: items}
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return job, fds


def resolve_paths(job: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    """Inside the sandbox: placeholders back to the descriptors it received."""
    for key in ("datasets", "workspace"):
        for item in job.get(key) or []:
            path = item.get("path", "")
            if path.startswith("fd:#"):
                item["path"] = f"fd:{fds[int(path[4:])]}"
    return job
