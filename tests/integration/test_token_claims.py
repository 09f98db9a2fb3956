"""Tokens whose signature is right but whose claims are absurd are bad tokens: 401, never 500.

Each token here is signed with the test app's real key (so it passes the signature check
and reaches the claims), or with another key, and sent where access tokens go (a GET and a
POST, which authenticate on different paths) and where refresh tokens go (refresh, logout).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from jose import jwt

from tests.conftest import TEST_SECRET
from tests.factories import Client

OTHER_KEY = "another-signing-key-" + "z" * 40

ABSURD: list[Any] = [
    pytest.param({"exp": 10**30}, id="exp-1e30"),
    pytest.param({"exp": -(10**30)}, id="exp-minus-1e30"),
    pytest.param({"exp": 2**63}, id="exp-2^63"),
    pytest.param({"exp": "x"}, id="exp-string"),
    pytest.param({"exp": None}, id="exp-null"),
    pytest.param({"exp": [1]}, id="exp-list"),
    pytest.param({"exp": {"a": 1}}, id="exp-object"),
    pytest.param({"exp": True}, id="exp-true"),
    pytest.param({"exp": float("inf")}, id="exp-infinity"),
    pytest.param({"exp": float("nan")}, id="exp-nan"),
    pytest.param({"exp": 4102444800.5}, id="exp-float"),
    pytest.param({"iat": 10**30}, id="iat-1e30"),
    pytest.param({"iat": -(10**30)}, id="iat-minus-1e30"),
    pytest.param({"iat": "x"}, id="iat-string"),
    pytest.param({"iat": None}, id="iat-null"),
    pytest.param({"iat": [1]}, id="iat-list"),
    pytest.param({"iat": float("inf")}, id="iat-infinity"),
    pytest.param({"nbf": 10**30}, id="nbf-1e30"),
    pytest.param({"nbf": "x"}, id="nbf-string"),
    pytest.param({"nbf": [1]}, id="nbf-list"),
    pytest.param({"ver": -1}, id="ver-negative"),
    pytest.param({"ver": 2**80}, id="ver-2^80"),
    pytest.param({"ver": 2**31}, id="ver-2^31"),
    pytest.param({"ver": "0"}, id="ver-string-digit"),
    pytest.param({"ver": "x"}, id="ver-string"),
    pytest.param({"ver": None}, id="ver-null"),
    pytest.param({"ver": 0.0}, id="ver-float"),
    pytest.param({"ver": False}, id="ver-false"),
    pytest.param({"ver": [0]}, id="ver-list"),
    pytest.param({"sub": "not-a-uuid"}, id="sub-not-uuid"),
    pytest.param({"sub": 12345}, id="sub-number"),
    pytest.param({"sub": None}, id="sub-null"),
    pytest.param({"sub": ""}, id="sub-empty"),
    pytest.param({"sub": "x" * 2000}, id="sub-long"),
    pytest.param({"jti": "not-a-uuid"}, id="jti-not-uuid"),
    pytest.param({"jti": 7}, id="jti-number"),
    pytest.param({"jti": None}, id="jti-null"),
    pytest.param({"fam": "not-a-uuid"}, id="fam-not-uuid"),
    pytest.param({"fam": 7}, id="fam-number"),
    pytest.param({"type": ["access", "refresh"]}, id="type-list"),
    pytest.param({"type": None}, id="type-null"),
    pytest.param({"aud": 7}, id="aud-number"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(payload: bytes, key: str = TEST_SECRET) -> str:
    """An HS256 JWS over any payload bytes, as a client holding the key could make one."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(payload)
    mac = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def _resign(token: str, changes: dict[str, Any], key: str = TEST_SECRET) -> str:
    """The same claims as `token` (a real one), with `changes` applied."""
    claims = {**jwt.get_unverified_claims(token), **changes}
    # json.dumps writes inf/nan as Infinity/NaN, which Python's JSON reader accepts.
    return _sign(json.dumps(claims).encode(), key)


def _assert_unauthorized(response: Any, what: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["message"] == f"Invalid or expired {what} token"
    assert error["request_id"]


def test_resigned_real_tokens_work_so_the_checks_below_are_real(client: Client) -> None:
    user = client.user()
    headers = {"Authorization": f"Bearer {_resign(user.tokens['access_token'], {})}"}
    assert client.get("/api/auth/me", headers=headers).status_code == 200
    assert client.post("/api/sessions", headers=headers, json={}).status_code == 201
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": _resign(user.tokens["refresh_token"], {})}
    )
    assert refreshed.status_code == 200


@pytest.mark.parametrize("changes", ABSURD)
@pytest.mark.parametrize("key", [TEST_SECRET, OTHER_KEY], ids=["real-key", "other-key"])
def test_absurd_access_token_claims_answer_401(
    client: Client, changes: dict[str, Any], key: str
) -> None:
    user = client.user()
    token = _resign(user.tokens["access_token"], changes, key)
    headers = {"Authorization": f"Bearer {token}"}
    _assert_unauthorized(client.get("/api/auth/me", headers=headers), "access")
    _assert_unauthorized(client.post("/api/sessions", headers=headers, json={}), "access")
    _assert_unauthorized(client.post("/api/auth/logout", headers=headers), "access")


@pytest.mark.parametrize("changes", ABSURD)
@pytest.mark.parametrize("key", [TEST_SECRET, OTHER_KEY], ids=["real-key", "other-key"])
def test_absurd_refresh_token_claims_answer_401_and_change_nothing(
    client: Client, changes: dict[str, Any], key: str
) -> None:
    user = client.user()
    token = _resign(user.tokens["refresh_token"], changes, key)
    _assert_unauthorized(client.post("/api/auth/refresh", json={"refresh_token": token}), "refresh")
    # Signing out with it signs out the access token and leaves the (unreadable) refresh
    # token's family alone: the real refresh token still works.
    logout = client.post("/api/auth/logout", headers=user.headers, json={"refresh_token": token})
    assert logout.status_code == 204, logout.text
    assert client.get("/api/auth/me", headers=user.headers).status_code == 401
    again = client.post("/api/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]})
    assert again.status_code == 200, again.text


PAYLOADS: list[Any] = [
    pytest.param(b"[]", id="array"),
    pytest.param(b"42", id="number"),
    pytest.param(b'"a string"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"{", id="broken-json"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"[" * 1500 + b"]" * 1500, id="deeply-nested"),
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_signed_payloads_that_are_no_claims_answer_401(client: Client, payload: bytes) -> None:
    token = _sign(payload)
    _assert_unauthorized(
        client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}), "access"
    )
    _assert_unauthorized(client.post("/api/auth/refresh", json={"refresh_token": token}), "refresh")


def test_absurd_tokens_are_not_remembered_as_valid(client: Client) -> None:
    """Verified tokens are cached; a refused one must be refused again, every time."""
    user = client.user()
    token = _resign(user.tokens["access_token"], {"exp": 10**30})
    for _ in range(3):
        response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        _assert_unauthorized(response, "access")
