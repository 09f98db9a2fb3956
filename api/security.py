"""Password hashing (argon2id), the password policy and JWTs (HS256 only)."""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from importlib import resources
from typing import Any, Literal

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from jose import JWTError, jwt

from api.config import Settings

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]


class Passwords:
    """argon2id with Quarry's parameters. Verifying an unknown account costs the same as a
    known one (a dummy hash is checked), so timing does not reveal which emails exist."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash("quarry-dummy-password-for-timing")

    def verify(self, hashed: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(hashed or self._dummy_hash, password) and hashed is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        return self._hasher.check_needs_rehash(hashed)


# --- password policy -------------------------------------------------------------------------

MAX_PASSWORD_LENGTH = 128


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    text = resources.files("api").joinpath("resources/common-passwords.txt").read_text()
    lines = (line.strip().lower() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def password_problem(password: str, email: str, min_length: int) -> str | None:
    """Why a password is refused, in words a user can act on; None when it is acceptable.
    Follows NIST SP 800-63B: length and a block-list, no composition rules."""
    normalized = unicodedata.normalize("NFKC", password)
    if len(normalized) < min_length:
        return f"Password must be at least {min_length} characters long."
    if len(normalized) > MAX_PASSWORD_LENGTH:
        return f"Password must be at most {MAX_PASSWORD_LENGTH} characters long."
    if len(set(normalized)) < 4:
        return "Password repeats too few different characters; choose a longer, varied one."
    lowered = normalized.lower()
    common = _common_passwords()
    if lowered in common or lowered.rstrip("0123456789!.") in common:
        return "Password is too common; choose one that is not on lists of leaked passwords."
    local_part = email.split("@", 1)[0].lower()
    if len(local_part) >= 4 and local_part in lowered:
        return "Password must not contain your email address."
    return None


# --- JWT ---------------------------------------------------------------------------------------


class TokenError(Exception):
    """The token is missing, malformed, tampered with, expired or of the wrong type."""


@dataclass(frozen=True)
class TokenClaims:
    sub: uuid.UUID
    jti: uuid.UUID
    type: TokenType
    iat: datetime
    exp: datetime
    family: uuid.UUID | None = None
    version: int = 0


def create_token(
    settings: Settings,
    *,
    user_id: uuid.UUID,
    token_type: TokenType,
    family: uuid.UUID | None = None,
    version: int = 0,
    now: datetime | None = None,
) -> tuple[str, TokenClaims]:
    now = now or datetime.now(UTC)
    ttl = (
        timedelta(minutes=settings.access_token_ttl_minutes)
        if token_type == "access"
        else timedelta(days=settings.refresh_token_ttl_days)
    )
    claims = TokenClaims(
        sub=user_id,
        jti=uuid.uuid4(),
        type=token_type,
        iat=now.replace(microsecond=0),
        exp=(now + ttl).replace(microsecond=0),
        family=family,
        version=version,
    )
    payload: dict[str, Any] = {
        "sub": str(claims.sub),
        "jti": str(claims.jti),
        "type": token_type,
        "iat": int(claims.iat.timestamp()),
        "exp": int(claims.exp.timestamp()),
        "ver": version,
    }
    if family is not None:
        payload["fam"] = str(family)
    return jwt.encode(payload, settings.jwt_key(), algorithm=ALGORITHM), claims


_REQUIRED = {"require_exp": True, "require_iat": True, "require_sub": True, "require_jti": True}


def decode_token(settings: Settings, token: str, expected: TokenType) -> TokenClaims:
    if not token or len(token) > 4096:
        raise TokenError("malformed token")
    claims = _decode_cached(settings.jwt_key(), token, expected)
    # A cached token may have expired since it was first verified.
    if claims.exp <= datetime.now(UTC):
        raise TokenError("Signature has expired.")
    return claims


# Claims are read strictly: exactly the types and ranges Quarry issues. Anything else, however
# well signed (a token minted with a leaked key, or by a buggy client of the same key), is
# a malformed token and answers 401 like any other bad token, never a server error.
_MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime can hold
_MAX_VERSION = 2**31 - 1  # users.token_version is a 32-bit integer


def _uuid_claim(payload: dict[str, Any], name: str) -> uuid.UUID:
    value = payload[name]
    if not isinstance(value, str) or len(value) != 36:
        raise TokenError(f"malformed {name} claim")
    return uuid.UUID(value)


def _int_claim(payload: dict[str, Any], name: str, low: int, high: int) -> int:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TokenError(f"malformed {name} claim")
    return value


def _claims(payload: Any, expected: TokenType) -> TokenClaims:
    if not isinstance(payload, dict):
        raise TokenError("malformed claims")
    if payload.get("type") != expected:
        raise TokenError(f"expected a {expected} token")
    try:
        return TokenClaims(
            sub=_uuid_claim(payload, "sub"),
            jti=_uuid_claim(payload, "jti"),
            type=expected,
            iat=datetime.fromtimestamp(_int_claim(payload, "iat", 0, _MAX_TIMESTAMP), UTC),
            exp=datetime.fromtimestamp(_int_claim(payload, "exp", 0, _MAX_TIMESTAMP), UTC),
            family=_uuid_claim(payload, "fam") if "fam" in payload else None,
            version=_int_claim(payload, "ver", 0, _MAX_VERSION) if "ver" in payload else 0,
        )
    except (KeyError, ValueError, TypeError, OverflowError, OSError):
        raise TokenError("malformed claims") from None


@lru_cache(maxsize=8192)
def _decode_cached(key: str, token: str, expected: TokenType) -> TokenClaims:
    """Verifying a JWT costs tens of microseconds and a client sends the same access token
    for its whole life; the cache is keyed by the exact token (and key), so a token that
    differs by one byte is verified afresh. Failures are never cached."""
    try:
        # The algorithm list is pinned: "none", RS/ES algorithms and anything else is refused.
        payload = jwt.decode(token, key, algorithms=[ALGORITHM], options=_REQUIRED)
    except JWTError as exc:
        raise TokenError(str(exc)) from None
    except Exception:
        # python-jose lets some absurd claims through as TypeError or OverflowError (an
        # "exp" of null, a list, or 1e400): a token it cannot read is a malformed token.
        raise TokenError("malformed token") from None
    return _claims(payload, expected)


def fingerprint(value: str) -> str:
    """A short stable digest for keys and logs, where the raw value must not appear."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]
