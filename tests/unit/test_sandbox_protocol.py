"""The wire between the worker and a sandbox process (worker/sandbox/protocol.py): a job
travels with its files as open descriptors, never as paths the sandbox could open."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.sandbox import protocol


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_paths_become_descriptor_placeholders_and_back(tmp_path: Path) -> None:
    data = tmp_path / "data.arrow"
    data.write_bytes(b"ARROW1")
    kept = tmp_path / "kept.json"
    kept.write_text("40")
    job = {
        "code": "1",
        "datasets": [{"name": "df", "path": str(data), "format": "arrow"}],
        "workspace": [{"name": "threshold", "path": str(kept), "kind": "value"}],
    }

    sandboxed, fds = protocol.rewrite_paths(job)
    try:
        assert sandboxed["datasets"][0]["path"] == "fd:#0"
        assert sandboxed["workspace"][0]["path"] == "fd:#1"
        assert str(tmp_path) not in repr(sandboxed)  # no host path reaches the sandbox
        assert job["datasets"][0]["path"] == str(data)  # the caller's job is untouched
        assert os.pread(fds[0], 6, 0) == b"ARROW1"
        with pytest.raises(OSError, match="Bad file descriptor"):  # read-only descriptors
            os.write(fds[0], b"x")
        resolved = protocol.resolve_paths(sandboxed, [101, 102])
        assert resolved["datasets"][0]["path"] == "fd:101"
        assert resolved["workspace"][0]["path"] == "fd:102"
    finally:
        for fd in fds:
            os.close(fd)


def test_a_missing_file_opens_nothing(tmp_path: Path) -> None:
    present = tmp_path / "a.arrow"
    present.write_bytes(b"x")
    before = len(os.listdir("/proc/self/fd"))
    job = {
        "datasets": [
            {"name": "a", "path": str(present)},
            {"name": "b", "path": str(tmp_path / "missing.arrow")},
        ]
    }
    with pytest.raises(FileNotFoundError):
        protocol.rewrite_paths(job)
    assert len(os.listdir("/proc/self/fd")) == before  # the first descriptor was closed


def test_too_many_files_are_refused_before_any_is_opened(tmp_path: Path) -> None:
    job = {"datasets": [{"name": f"d{i}", "path": "/nonexistent"} for i in range(65)]}
    with pytest.raises(ValueError, match="65 files in one job; at most 64"):
        protocol.rewrite_paths(job)


def test_a_job_and_its_descriptors_cross_the_socket(
    pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    ours, theirs = pair
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    fd = os.open(path, os.O_RDONLY)
    payload = b"{" + b"x" * (3 << 20) + b"}"  # bigger than one socket buffer
    try:
        sender = os.fork()
        if sender == 0:  # pragma: no cover - the sending side, in a child
            protocol.send_job(ours, payload, [fd])
            os._exit(0)
        received, fds = protocol.receive_job(theirs)
        os.waitpid(sender, 0)
    finally:
        os.close(fd)
    assert received == payload
    assert len(fds) == 1
    assert os.pread(fds[0], 5, 0) == b"hello"
    os.close(fds[0])


def test_a_cut_or_oversized_job_is_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.sendall(protocol._HEADER.pack(10) + b"short")
    ours.shutdown(socket.SHUT_WR)
    with pytest.raises(EOFError, match="cut short"):
        protocol.receive_job(theirs)

    first, second = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with first, second:
        first.sendall(protocol._HEADER.pack(protocol.MAX_JOB_BYTES + 1))
        with pytest.raises(ValueError, match="job too large"):
            protocol.receive_job(second)
        first.close()
        with pytest.raises(EOFError, match="no job"):
            protocol.receive_job(second)


def test_sending_more_descriptors_than_allowed_is_refused(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    with pytest.raises(ValueError, match="at most 64 files"):
        protocol.send_job(pair[0], b"{}", list(range(65)))


def test_a_ready_sandbox_is_handed_over_with_its_socket() -> None:
    control, zygote = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child, _peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with control, zygote, child, _peer:
        protocol.send_handle(zygote, child.fileno(), b"4242")
        fd, info = protocol.receive_handle(control)
        assert info == b"4242"
        handed = socket.socket(fileno=fd)
        handed.sendall(b"R")
        assert _peer.recv(1) == b"R"
        handed.close()
        zygote.sendall(b"no sandbox")
        with pytest.raises(EOFError, match="no sandbox"):
            protocol.receive_handle(control)
        zygote.close()
        with pytest.raises(EOFError, match="zygote gone"):
            protocol.receive_handle(control)
