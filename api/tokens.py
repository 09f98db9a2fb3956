"""Issuing, rotating and revoking tokens.

Access tokens are short-lived JWTs checked against the database on every request (user
active, token version, not signed out). Refresh tokens are JWTs with a row each: a refresh
token is spent when used, and presenting a spent one revokes its whole tree (its family, and
the families forked from the same root), because only a thief or a replay would do that.

`fork` serves a browser that stays signed in: the cookie's token is rotated and a new family
is forked for one tab, so that tabs never present each other's tokens (see docs/SECURITY.md,
"Staying signed in").
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import Request
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from api.audit import audit
from api.config import Settings
from api.db import utcnow
from api.deps import Principal, client_ip, user_agent
from api.errors import Unauthorized
from api.logs import get_logger
from api.metrics import TOKEN_REUSE
from api.models import RefreshToken, RevokedAccessToken, User
from api.schemas import ForkedTokens, TokenPair
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
    root: uuid.UUID | None = None,
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
            root_family_id=root,
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


def _decode(settings: Settings, token: str) -> TokenClaims:
    try:
        return decode_token(settings, token, "refresh")
    except TokenError:
        raise Unauthorized("Invalid or expired refresh token") from None


def _spend(db: Session, claims: TokenClaims) -> RefreshToken | None:
    """Spend the token atomically (of two concurrent uses, exactly one wins): its row when
    this call spent it, else None."""
    spent = db.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == claims.jti,
            RefreshToken.user_id == claims.sub,
            RefreshToken.rotated_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > utcnow(),
        )
        .values(rotated_at=utcnow())
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return db.get(RefreshToken, claims.jti)


def _refuse(db: Session, request: Request, claims: TokenClaims) -> Unauthorized:
    """A token that cannot be used: a spent one (reuse) revokes its tree first."""
    row = db.get(RefreshToken, claims.jti)
    if row is not None and row.user_id == claims.sub and row.rotated_at is not None:
        _revoke_tree(db, row, "reuse")
        audit(db, request, "auth.refresh_reuse", user_id=row.user_id, family=str(row.family_id))
        db.commit()
        TOKEN_REUSE.inc()
        log.warning("refresh token reused; tree revoked", family=str(row.family_id))
    else:
        db.rollback()
    return Unauthorized(_SPENT)


def _active_user(db: Session, user_id: uuid.UUID) -> User:
    user = db.get(User, user_id)
    if user is None or not user.is_active:
        db.rollback()
        raise Unauthorized(_SPENT)
    return user


def rotate(db: Session, settings: Settings, request: Request, token: str) -> TokenPair:
    claims = _decode(settings, token)
    row = _spend(db, claims)
    if row is None:
        raise _refuse(db, request, claims)
    user = _active_user(db, claims.sub)
    pair = issue_pair(db, settings, request, user, family=row.family_id, root=row.root_family_id)
    db.commit()
    return pair


def fork(db: Session, settings: Settings, request: Request, token: str) -> ForkedTokens:
    """Rotate `token` in its family and fork a new family from it. A token of a root family
    (the browser's cookie: forks are never roots) spent less than REFRESH_FORK_GRACE_SECONDS
    ago may fork again (tabs restored at once all present the cookie's token); any other
    spent token is reuse: a forked family's tokens, the tabs', get no grace."""
    claims = _decode(settings, token)
    row = _spend(db, claims)
    if row is None:
        row = db.get(RefreshToken, claims.jti)
        grace = timedelta(seconds=settings.refresh_fork_grace_seconds)
        recent = (
            row is not None
            and row.user_id == claims.sub
            and row.revoked_at is None
            and row.root_family_id is None
            and row.rotated_at is not None
            and utcnow() - row.rotated_at <= grace
            and row.expires_at > utcnow()
        )
        if not recent or row is None:
            raise _refuse(db, request, claims)
    user = _active_user(db, claims.sub)
    rotated = issue_pair(db, settings, request, user, family=row.family_id, root=row.root_family_id)
    forked = issue_pair(
        db, settings, request, user, family=uuid.uuid4(), root=row.root_family_id or row.family_id
    )
    db.commit()
    return ForkedTokens(rotated=rotated, fork=forked)


def _revoke_tree(db: Session, row: RefreshToken, reason: str) -> None:
    """Revoke the token's family, its root family and every family forked from that root."""
    root = row.root_family_id or row.family_id
    # Rows locked in id order first: two requests revoking one tree at once (two replays
    # of a spent token) must not lock its rows in different orders and deadlock.
    ids = db.scalars(
        select(RefreshToken.id)
        .where(
            or_(RefreshToken.family_id == root, RefreshToken.root_family_id == root),
            RefreshToken.revoked_at.is_(None),
        )
        .order_by(RefreshToken.id)
        .with_for_update()
    ).all()
    if ids:
        db.execute(
            update(RefreshToken)
            .where(RefreshToken.id.in_(ids))
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
                _revoke_tree(db, row, "logout")
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
