"""The API killed (SIGKILL) in the middle of a large upload: a real `uvicorn api.main:app`
process receives a 48 MB multipart body sent slowly over a raw socket, and dies with the
file half written to its staging folder (DATA_DIR/uploads/<upload_id>/). The API comes
back and a worker with beat starts: no dataset may be left `processing`, and the datasets
reaper must remove the orphaned staging folder once it is old enough.

The orphan clean-up is being added to worker/datasets.py `reap` by another change; this
test finds its age setting (a Settings field, or a constant of worker.datasets, whose name
says "orphan") and makes it short. Until that change lands, the test ends as an expected
failure that says so (and fails for real once the setting exists but the folder stays).

Real: the API process, PostgreSQL, Redis (a key prefix of its own), a Celery worker with
beat. No LLM is involved.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import text

from api.config import Settings
from tests.faults.conftest import http_user, wait_until

pytestmark = pytest.mark.slow

TOTAL_MB = 48
KILL_AFTER_MB = 12
ORPHAN_AGE_S = 2


def _orphan_setting() -> tuple[str | None, float | None]:
    """(the Settings field for the orphan age, or None; the worker.datasets constant's
    value, or None)."""
    import worker.datasets as datasets

    field = next((n for n in Settings.model_fields if "orphan" in n.lower()), None)
    constant = next(
        (getattr(datasets, n) for n in dir(datasets) if "ORPHAN" in n.upper() and
         isinstance(getattr(datasets, n), int | float)),
        None,
    )  # fmt: skip
    return field, constant


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
    field, constant = _orphan_setting()
    overrides: dict[str, Any] = {"max_upload_mb": TOTAL_MB + 8}
    if field is not None:
        overrides[field] = ORPHAN_AGE_S
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

    limit = (ORPHAN_AGE_S if field else constant or 0) + 15
    try:
        removed = wait_until(lambda: not folder.exists(), "the staging folder removed", limit)
    except AssertionError:
        if field is None and constant is None:
            pytest.xfail(
                f"the datasets reaper has no orphan clean-up yet: {folder.name} "
                f"({written >> 20} MB, written before the kill) is still under "
                f"DATA_DIR/uploads/ {time.monotonic() - killed:.0f} s later"
            )
        raise
    print(
        f"\n[API killed mid-upload] {written >> 20} MB of {len(payload) >> 20} MB written "
        f"before the kill; datasets {statuses}; the staging folder went "
        f"{removed:.1f} s after the worker started (orphan age: {field or constant})"
    )
