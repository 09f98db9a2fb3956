"""Token housekeeping drops expired rows only, and changes no answer."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.db import utcnow
from api.maintenance import purge_expired_tokens
from api.models import RefreshToken, RevokedAccessToken
from api.queue import PURGE_TOKENS, TASK_QUEUES, TaskQueue
from tests.conftest import REDIS_URL
from tests.factories import Client
from tests.test_agent_integration import Stack
from worker.datasets import STAGING_ABANDONED_AFTER_S


def _count(db: Session, model: type, user_id: str) -> int:
    stmt = select(func.count()).select_from(model).where(model.user_id == uuid.UUID(user_id))  # type: ignore[attr-defined]
    return int(db.scalar(stmt) or 0)


def test_purge_drops_expired_tokens_and_keeps_live_ones(client: Client, pg_engine: Engine) -> None:
    user = client.user()
    signed_out = client.login(user.email)
    client.post(
        "/api/auth/logout",
        headers={"Authorization": f"Bearer {signed_out['access_token']}"},
        json={"refresh_token": signed_out["refresh_token"]},
    )
    with Session(pg_engine) as db:
        assert _count(db, RefreshToken, user.id) == 2
        assert _count(db, RevokedAccessToken, user.id) == 1
        # nothing has expired yet: nothing goes
        purge_expired_tokens(db)
        assert _count(db, RefreshToken, user.id) == 2
        # eight days on, every one of this user's tokens has expired
        counts = purge_expired_tokens(db, now=utcnow() + timedelta(days=8))
        assert counts["refresh_tokens"] >= 2
        assert counts["revoked_access_tokens"] >= 1
        assert _count(db, RefreshToken, user.id) == 0
        assert _count(db, RevokedAccessToken, user.id) == 0
    # the live session still works today
    assert client.get("/api/auth/me", headers=user.headers).status_code == 200


def test_beat_sends_the_purge_to_a_real_worker_hourly(
    pg_url: str, pg_engine: Engine, tmp_path: Path
) -> None:
    """Scheduled by beat on the maintenance queue; a real worker carries it out."""
    from worker.celery_app import app

    entry = app.conf.beat_schedule["purge-expired-tokens"]
    assert (entry["task"], entry["schedule"]) == (PURGE_TOKENS, 3600.0)
    assert entry["options"]["queue"] == TASK_QUEUES[PURGE_TOKENS] == "maintenance"

    stack = Stack(pg_url, REDIS_URL, tmp_path / "data")
    try:
        client = stack.start_api()
        user = client.user()
        client.login(user.email)
        with Session(pg_engine) as db:
            db.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == uuid.UUID(user.id))
                .values(expires_at=utcnow() - timedelta(minutes=1))
            )
            db.commit()
        stack.start_worker()
        queue = TaskQueue(stack.settings)
        assert queue.send(PURGE_TOKENS)
        queue.close()
        deadline = time.monotonic() + 60
        with Session(pg_engine) as db:
            while _count(db, RefreshToken, user.id) and time.monotonic() < deadline:
                time.sleep(0.2)
                db.rollback()  # a fresh snapshot
            assert _count(db, RefreshToken, user.id) == 0
    finally:
        stack.close()


def test_beat_removes_an_upload_folder_an_api_crash_abandoned(pg_url: str, tmp_path: Path) -> None:
    """An API killed mid-upload leaves DATA_DIR/uploads/<id>/ with part of a file and no
    dataset. The datasets reaper, sent by beat to the maintenance queue and run by a real
    worker, removes it once it is older than an upload may take to arrive; a folder an
    upload is still writing stays."""
    stack = Stack(pg_url, REDIS_URL, tmp_path / "data", reaper_interval_s=0.5)
    try:
        uploads = stack.data_dir / "uploads"
        abandoned, arriving = uploads / uuid.uuid4().hex, uploads / uuid.uuid4().hex
        for folder in (abandoned, arriving):
            folder.mkdir(parents=True)
            (folder / "upload").write_bytes(b"id,value\n1,2\n3,")  # cut short
        then = time.time() - STAGING_ABANDONED_AFTER_S - 60
        for path in (abandoned / "upload", abandoned):
            os.utime(path, (then, then))

        stack.start_worker(beat=True)
        deadline = time.monotonic() + 60
        while abandoned.exists() and time.monotonic() < deadline:
            time.sleep(0.2)

        assert not abandoned.exists()
        assert (arriving / "upload").read_bytes() == b"id,value\n1,2\n3,"
    finally:
        stack.close()
