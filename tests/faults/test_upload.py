"""The API killed (SIGKILL) in the middle of a large upload: a real `uvicorn api.main:app`
process receives a 48 MB multipart body sent slowly over a raw socket, and dies with the
file half written to its staging folder (DATA_DIR/uploads/<upload_id>/). The API comes
back and a worker with beat starts: no dataset may be left `processing`, and the datasets
reaper must remove the abandoned staging folder once nothing has touched it for
STAGING_ABANDONED_AFTER_S (worker/datasets.py; 1.5 h, a constant the worker process
cannot be told to shorten), while it leaves a folder touched recently alone.

The hour and a half is simulated, not waited for: the folder's and its file's times are
set that far back (the reaper judges a folder by the newest mtime in it).

Real: the API process, PostgreSQL, Redis (a key prefix of its own), a Celery worker with
beat. No LLM is involved.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import text

from tests.faults.conftest import http_user, wait_until

pytestmark = pytest.mark.slow

TOTAL_MB = 48
KILL_AFTER_MB = 12


def _age(folder: Path, seconds: float) -> None:
    """As if nothing had touched the folder, or anything in it, for `seconds`."""
    then = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (then, then), follow_symlinks=False)


def _rows(size: int) -> bytes:
    line = b"12345,67890,some text here,2024-01-01\n"
    return b"id,value,label,day\n" + line * (size // len(line))


def _staged(data_dir: Path) -> list[Path]:
    uploads = data_dir / "uploads"
    return sorted(p for p in uploads.iterdir() if p.is_dir()) if uploads.is_dir() else []


def _staged_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_the_api_killed_mid_upload_leaves_nothing_processing_and_no_folder(
    fault_stack: Any,
) -> None:
    overrides: dict[str, Any] = {"max_upload_mb": TOTAL_MB + 8}
    stack = fault_stack(**overrides)
    api = stack.start_api_process()
    with httpx.Client(base_url=api.url, timeout=30) as client:
        user = http_user(client)

    payload = _rows(TOTAL_MB << 20)
    boundary = f"quarry-fault-{uuid.uuid4().hex}"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (
        f"POST /api/datasets HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
        f"Authorization: {user.headers['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + len(payload) + len(tail)}\r\n\r\n"
    ).encode()

    chunk = 1 << 20
    sent = 0
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(request + head)
        while sent < KILL_AFTER_MB << 20:
            sock.sendall(payload[sent : sent + chunk])
            sent += chunk
            time.sleep(0.05)
        wait_until(
            lambda: any(
                _staged_bytes(f) >= (KILL_AFTER_MB - 2) << 20 for f in _staged(stack.data_dir)
            ),
            "the upload is being written to its staging folder",
            20,
        )
        api.kill()  # SIGKILL, mid-stream
        killed = time.monotonic()
    [folder] = _staged(stack.data_dir)
    written = _staged_bytes(folder)
    assert written < len(payload), "the whole file arrived before the kill"

    api = stack.start_api_process()
    stack.start_worker(beat=True)
    with httpx.Client(base_url=api.url, timeout=30) as client:
        listed = client.get("/api/datasets", headers=user.headers)
        assert listed.status_code == 200, listed.text
        statuses = [d["status"] for d in listed.json()["data"]]
    with stack.engine.connect() as conn:
        processing = conn.execute(
            text("SELECT count(*) FROM datasets WHERE user_id = :u AND status = 'processing'"),
            {"u": user.id},
        ).scalar()
    assert processing == 0, statuses
    assert "processing" not in statuses, statuses

    # a folder touched a moment ago may be an upload still arriving: it stays
    time.sleep(3)  # several reaper rounds (REAPER_INTERVAL_S=0.5)
    assert folder.exists(), "the reaper removed a staging folder touched seconds ago"
    assert "abandoned upload removed" not in stack.log_text()

    from worker.datasets import STAGING_ABANDONED_AFTER_S

    _age(folder, STAGING_ABANDONED_AFTER_S + 60)
    removed = wait_until(lambda: not folder.exists(), "the abandoned staging folder removed", 15)
    assert "abandoned upload removed" in stack.log_text()
    print(
        f"\n[API killed mid-upload] {written >> 20} MB of {len(payload) >> 20} MB written "
        f"before the kill, {time.monotonic() - killed:.1f} s ago; datasets {statuses}; the "
        f"staging folder went {removed:.1f} s after it was aged past "
        f"{STAGING_ABANDONED_AFTER_S} s"
    )
