"""Registration, sign-in, token refresh, sign-out and the current user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api import tokens
from api.audit import audit
from api.db import utcnow
from api.deps import AccessClaims, AppState, CurrentUser, SessionDep, StateDep, client_ip
from api.errors import Conflict, TooManyRequests, Unauthorized, Unprocessable
from api.metrics import LOGINS
from api.models import User
from api.schemas import (
    NO_NUL_PATTERN,
    ForkedTokens,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    TokenPair,
    UserPublic,
    UserRegister,
    normalize_email,
)
from api.security import fingerprint, password_problem

router = APIRouter(prefix="/api/auth", tags=["auth"])

_BAD_CREDENTIALS = "Incorrect email or password"
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired token"}
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses={
        409: {"description": "An account with this email already exists"},
        422: {"description": "Invalid email, or a password the policy refuses"},
        429: {"description": "Too many registrations from this address"},
    },
)
def register(body: UserRegister, request: Request, db: SessionDep, state: StateDep) -> UserPublic:
    settings = state.settings
    key = f"register:ip:{client_ip(request)}"
    if state.counter.hit(key, 3600) > settings.register_max_per_ip_per_hour:
        retry = state.counter.retry_after(key, settings.register_max_per_ip_per_hour) or 3600
        raise TooManyRequests("Too many accounts created from this address; try later.", retry)
    problem = password_problem(body.password, body.email, settings.password_min_length)
    if problem:
        raise Unprocessable(problem, details=[{"field": "password", "message": problem}])
    if db.scalar(select(User.id).where(User.email == body.email)) is not None:
        raise Conflict("An account with this email already exists")
    user = User(
        email=body.email,
        hashed_password=state.passwords.hash(body.password),
        full_name=body.full_name,
    )
    db.add(user)
    try:
        db.flush()
    except IntegrityError:  # registered by a concurrent request since the check above
        db.rollback()
        raise Conflict("An account with this email already exists") from None
    audit(db, request, "auth.register", user_id=user.id)
    db.commit()
    return UserPublic.model_validate(user)


_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {
                            "type": "string",
                            "maxLength": 254,
                            "pattern": NO_NUL_PATTERN,
                            "description": "Your email",
                        },
                        "password": {
                            "type": "string",
                            "format": "password",
                            "maxLength": 128,
                            "pattern": NO_NUL_PATTERN,
                        },
                    },
                }
            },
        },
    }
}


_FORM_FIELDS = {"email": "username", "password": "password"}


async def _credentials(request: Request) -> LoginRequest:
    """JSON `{email, password}`, or the OAuth2 password form (`username`, `password`) that
    the Authorize button of /docs sends."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form(max_fields=10, max_files=0)
        try:
            return LoginRequest.model_validate(
                {"email": form.get("username", ""), "password": form.get("password", "")}
            )
        except ValidationError as exc:
            # Errors name the form's fields, not the JSON body's.
            errors = [
                {**e, "loc": ("body", *(_FORM_FIELDS.get(str(p), p) for p in e["loc"]))}
                for e in exc.errors(include_url=False)
            ]
            raise RequestValidationError(errors) from None
    try:
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


@router.post(
    "/login",
    summary="Sign in (JSON or OAuth2 password form)",
    openapi_extra=_LOGIN_BODY,
    responses={
        400: {"description": "A form that cannot be read (over 10 fields, or a file in it)"},
        401: {"description": "Incorrect email or password"},
        422: {"description": "No body, malformed JSON, a missing field, or text with NUL"},
        429: {"description": "Too many failed attempts; see Retry-After"},
    },
)
async def login(request: Request, state: StateDep) -> TokenPair:
    credentials = await _credentials(request)
    return await run_in_threadpool(_login, state, request, credentials)


def _login(state: AppState, request: Request, credentials: LoginRequest) -> TokenPair:
    settings, counter = state.settings, state.counter
    try:
        email = normalize_email(credentials.email)
    except ValueError:
        email = credentials.email.strip().lower()
    account_key = f"login:acct:{fingerprint(email)}"
    ip_key = f"login:ip:{client_ip(request)}"
    # Checked before the password: a locked account answers the same whether it exists or not.
    retry = counter.retry_after(account_key, settings.login_max_failures_per_account) or (
        counter.retry_after(ip_key, settings.login_max_failures_per_ip)
    )
    with state.sessionmaker() as db:
        if retry:
            LOGINS.labels("throttled").inc()
            audit(db, request, "auth.login_throttled", email_hash=fingerprint(email))
            db.commit()
            raise TooManyRequests("Too many failed sign-in attempts; try again later.", retry)

        user = db.scalars(select(User).where(User.email == email)).first()
        # Unknown emails are verified against a dummy hash: same answer, similar time.
        ok = state.passwords.verify(user.hashed_password if user else None, credentials.password)
        if not ok or user is None or not user.is_active:
            counter.hit(account_key, settings.login_window_seconds)
            counter.hit(ip_key, settings.login_window_seconds)
            LOGINS.labels("failed").inc()
            audit(
                db,
                request,
                "auth.login_failed",
                user_id=user.id if user else None,
                email_hash=fingerprint(email),
            )
            db.commit()
            raise Unauthorized(_BAD_CREDENTIALS)

        counter.reset(account_key)
        if state.passwords.needs_rehash(user.hashed_password):
            user.hashed_password = state.passwords.hash(credentials.password)
        user.last_login_at = utcnow()
        pair = tokens.issue_pair(db, settings, request, user)
        audit(db, request, "auth.login", user_id=user.id)
        db.commit()
        LOGINS.labels("succeeded").inc()
        return pair


@router.post(
    "/refresh",
    summary="Exchange a refresh token for a new token pair",
    responses={401: {"description": "Invalid, expired, revoked or already-used refresh token"}},
)
def refresh(body: RefreshRequest, request: Request, db: SessionDep, state: StateDep) -> TokenPair:
    return tokens.rotate(db, state.settings, request, body.refresh_token)


@router.post(
    "/fork",
    summary="Rotate a refresh token and fork a new token family from it (one per browser tab)",
    responses={401: {"description": "Invalid, expired, revoked or already-used refresh token"}},
)
def fork(body: RefreshRequest, request: Request, db: SessionDep, state: StateDep) -> ForkedTokens:
    """For a client holding one long-lived refresh token for several short-lived clients (the
    UI: a cookie for the browser, a family per tab). `rotated` replaces the presented token;
    `fork` is a family of its own that never spends the other's tokens. A token of a root
    family spent less than REFRESH_FORK_GRACE_SECONDS ago may fork again (tabs restored at
    once); any other reuse revokes the whole tree, as with `/refresh`."""
    return tokens.fork(db, state.settings, request, body.refresh_token)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign out this access token (and a refresh token's family, or everywhere)",
    responses=_AUTH_ERRORS,
)
def logout(
    request: Request,
    db: SessionDep,
    state: StateDep,
    user: CurrentUser,
    claims: AccessClaims,
    body: LogoutRequest | None = None,
) -> None:
    body = body or LogoutRequest()
    tokens.logout(
        db,
        state.settings,
        request,
        user,
        claims,
        refresh_token=body.refresh_token,
        everywhere=body.everywhere,
    )


@router.get("/me", summary="The signed-in user", responses=_AUTH_ERRORS)
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
