"""Issuing, rotating and revoking tokens.

Access tokens are short-lived JWTs checked against the database on every request (user
active, token version, not signed out). Refresh tokens are JWTs with a row each: a refresh
token is spent when used, and presenting a spent one revokes its whole family, because only
a thief or a replay would do that.
"""

from __future__ import annotations

import uuid

from fastapi import Request
from sqlalchemy import update
from sqlalchemy.orm import Session

from api.audit import audit
from api.config import Settings
from api.db import utcnow
from api.deps import Principal, client_ip, user_agent
from api.errors import Unauthorized
from api.logs import get_logger
from api.metrics import TOKEN_REUSE
from api.models import RefreshToken, RevokedAccessToken, User
from api.schemas import TokenPair
from api.security import TokenClaims, TokenError, create_token, decode_token

log = get_logger("quarry.auth")

_SPENT = "Refresh token is no longer valid; sign in again"


def issue_pair(
    db: Session,
    settings: Settings,
    request: Request,
    user: User,
    *,
    family: uuid.UUID | None = None,
) -> TokenPair:
    """Adds the refresh token's row to the caller's transaction."""
    access, access_claims = create_token(
        settings, user_id=user.id, token_type="access", version=user.token_version
    )
    family = family or uuid.uuid4()
    refresh, refresh_claims = create_token(
        settings, user_id=user.id, token_type="refresh", family=family
    )
    db.add(
        RefreshToken(
            id=refresh_claims.jti,
            user_id=user.id,
            family_id=family,
            created_at=refresh_claims.iat,
            expires_at=refresh_claims.exp,
            ip=client_ip(request),
            user_agent=user_agent(request),
        )
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh,
        expires_in=int((access_claims.exp - access_claims.iat).total_seconds()),
        refresh_expires_in=int((refresh_claims.exp - refresh_claims.iat).total_seconds()),
    )


def rotate(db: Session, settings: Settings, request: Request, token: str) -> TokenPair:
    try:
        claims = decode_token(settings, token, "refresh")
    except TokenError:
        raise Unauthorized("Invalid or expired refresh token") from None
    now = utcnow()
    # Spend the token atomically: of two concurrent refreshes with it, exactly one wins.
    spent = db.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == claims.jti,
            RefreshToken.user_id == claims.sub,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(rotated_at=now)
    )
    row = db.get(RefreshToken, claims.jti)
    if spent.rowcount != 1 or row is None:  # type: ignore[attr-defined]
        if row is not None and row.user_id == claims.sub and row.rotated_at is not None:
            _revoke_family(db, row.family_id, "reuse")
            audit(db, request, "auth.refresh_reuse", user_id=row.user_id, family=str(row.family_id))
            db.commit()
            TOKEN_REUSE.inc()
            log.warning("refresh token reused; family revoked", family=str(row.family_id))
        raise Unauthorized(_SPENT)
    user = db.get(User, claims.sub)
    if user is None or not user.is_active:
        db.rollback()
        raise Unauthorized(_SPENT)
    pair = issue_pair(db, settings, request, user, family=row.family_id)
    db.commit()
    return pair


def _revoke_family(db: Session, family: uuid.UUID, reason: str) -> None:
    db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


def logout(
    db: Session,
    settings: Settings,
    request: Request,
    user: Principal,
    access: TokenClaims,
    *,
    refresh_token: str | None,
    everywhere: bool,
) -> None:
    db.merge(RevokedAccessToken(jti=access.jti, user_id=user.id, expires_at=access.exp))
    if refresh_token:
        try:
            refresh = decode_token(settings, refresh_token, "refresh")
        except TokenError:
            refresh = None
        # Somebody else's token is ignored, not revoked: logging out must not be a way
        # to sign other people out.
        if refresh is not None and refresh.sub == user.id:
            row = db.get(RefreshToken, refresh.jti)
            if row is not None and row.user_id == user.id:
                _revoke_family(db, row.family_id, "logout")
    if everywhere:
        db.execute(
            update(User).where(User.id == user.id).values(token_version=User.token_version + 1)
        )
        db.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason="logout_everywhere")
        )
    audit(db, request, "auth.logout", user_id=user.id, everywhere=everywhere)
    db.commit()
