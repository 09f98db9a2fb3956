"""The attach connections of a sandbox container: Docker's multiplexed output stream read
up to a cap before a deadline, the job written to stdin, connections closed for good.
Shared by the docker backend's cold path and its pool of containers started ahead."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from worker.sandbox.base import OUTPUT_SLACK

log = logging.getLogger("quarry.sandbox.docker")

FRAME = struct.Struct(">BxxxL")  # Docker's multiplexed stream: stream id, 3 pad, size
STDERR_KEEP = 4 << 10  # the tail of the runner's stderr kept for the worker's log

Clock = Callable[[], float]


def raw_socket(attached: Any) -> Any:
    """The socket under what `attach_socket` returns (a SocketIO over a Unix socket; a
    TLS socket or an SSH channel already is one)."""
    return getattr(attached, "_sock", attached)


def close(attached: Any) -> None:
    """End an attach connection for good. Shut the socket down first: closing the SocketIO
    alone leaves the connection open while anything else still references it, and an engine
    writing into a connection nobody reads blocks its kill and remove of that container."""
    sock = raw_socket(attached)  # None once the SocketIO was closed: closing is idempotent
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        attached.close()
    if sock is not None and sock is not attached:
        with contextlib.suppress(OSError):
            sock.close()


class Demux:
    """Docker's multiplexed stream, split as it arrives: what the runner wrote on stdout,
    and the tail of its stderr."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.stdout = bytearray()
        self.stderr = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        while len(self.pending) >= FRAME.size:
            stream, size = FRAME.unpack_from(self.pending)
            if len(self.pending) < FRAME.size + size:
                return
            data = bytes(self.pending[FRAME.size : FRAME.size + size])
            del self.pending[: FRAME.size + size]
            if stream == 2:
                self.stderr += data
                del self.stderr[:-STDERR_KEEP]
            else:
                self.stdout += data


def framed_result(stdout: bytearray) -> bytes | None:
    """The result a `--warm` runner wrote as `<length in bytes>\n<result>`, once all of it
    is in; None while it is not (or when stdout is not framed: then its end is the end)."""
    newline = stdout.find(b"\n", 0, 21)
    if newline <= 0 or not stdout[:newline].isdigit():
        return None
    size = int(stdout[:newline])
    if len(stdout) - newline - 1 < size:
        return None
    return bytes(stdout[newline + 1 : newline + 1 + size])


def read_output(
    sock: Any,
    deadline: float,
    cap: int,
    clock: Clock,
    demux: Demux | None = None,
    framed: bool = False,
) -> tuple[bytes, bytes, str | None]:
    """The runner's stdout (and the tail of its stderr) until it ends, the deadline passes
    ("timeout") or stdout goes over the cap ("too_large"). `framed`: a `--warm` runner's
    length-prefixed result is returned as soon as it is whole."""
    demux = demux or Demux()
    limit = cap + OUTPUT_SLACK
    while True:
        if framed and (whole := framed_result(demux.stdout)) is not None:
            return whole, bytes(demux.stderr), None
        remaining = deadline - clock()
        if remaining <= 0:
            return b"", b"", "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            return b"", b"", "timeout"
        except OSError as exc:
            log.debug("sandbox output: %s", exc)
            chunk = b""
        if not chunk:
            if framed and demux.stdout[:1].isdigit():
                # a frame cut short (the runner died mid-write): what is after the header
                return bytes(demux.stdout).partition(b"\n")[2], bytes(demux.stderr), None
            return bytes(demux.stdout), bytes(demux.stderr), None
        demux.feed(chunk)
        if len(demux.stdout) + len(demux.pending) > limit:
            return b"", b"", "too_large"


def wait_for_line(sock: Any, line: bytes, deadline: float, clock: Clock, demux: Demux) -> bool:
    """Read until the runner has written `line` on stderr (True), or the stream ended, the
    deadline passed or it wrote on stdout first (False)."""
    while line not in demux.stderr:
        remaining = deadline - clock()
        if remaining <= 0 or demux.stdout:
            return False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 12)
        except OSError:
            return False
        if not chunk:
            return False
        demux.feed(chunk)
    demux.stderr.clear()
    return True


def send(attached: Any, payload: bytes, deadline: float, clock: Clock) -> None:
    """Write the job to the runner's stdin, then close the connection: with `stdin_once`
    the runner reads EOF. A runner that died or a deadline that passed shows in the read."""
    sock = raw_socket(attached)
    try:
        sock.settimeout(max(0.01, deadline - clock()))
        sock.sendall(payload)
    except OSError as exc:
        log.debug("sandbox stdin: %s", exc)
    finally:
        close(attached)
