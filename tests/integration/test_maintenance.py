"""Token housekeeping drops expired rows only, and changes no answer."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.db import utcnow
from api.maintenance import purge_expired_tokens
from api.models import RefreshToken, RevokedAccessToken
from tests.factories import Client


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
