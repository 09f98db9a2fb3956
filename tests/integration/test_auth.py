"""Accounts and tokens: registration rules, sign-in, refresh rotation, sign-out, throttling."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.main import create_app
from api.models import AuditEvent, RefreshToken
from api.models import User as UserRow
from tests.conftest import make_settings
from tests.factories import PASSWORD, Client


def _me(client: Client, access: str) -> int:
    return int(
        client.get("/api/auth/me", headers={"Authorization": f"Bearer {access}"}).status_code
    )


# --- registration --------------------------------------------------------------------------


def test_email_is_normalised_so_one_mailbox_is_one_account(client: Client) -> None:
    created = client.register("  Ada.Lovelace@EXAMPLE.org ")
    assert created["email"] == "ada.lovelace@example.org"
    again = client.post(
        "/api/auth/register", json={"email": "ADA.lovelace@example.ORG", "password": PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "An account with this email already exists"
    # and signing in works whatever the case
    assert client.login("Ada.Lovelace@Example.org")["access_token"]


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("short1!", "at least 10 characters"),
        ("x" * 129, "at most 128 characters"),
        ("aaaaaaaaaaaa", "too few different characters"),
        ("password123", "too common"),
        ("Qwertyuiop", "too common"),
        ("my-grace-hopper-secret", "must not contain your email"),
    ],
)
def test_password_policy_explains_what_to_fix(client: Client, password: str, fragment: str) -> None:
    response = client.post(
        "/api/auth/register", json={"email": "grace-hopper@example.com", "password": password}
    )
    assert response.status_code == 422
    assert fragment in response.json()["error"]["message"]


def test_invalid_email_is_refused_with_a_readable_message(client: Client) -> None:
    response = client.post(
        "/api/auth/register", json={"email": "not-an-email", "password": PASSWORD}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("email:")


def test_concurrent_registrations_of_one_email_create_one_account(
    client: Client, pg_engine: Engine
) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    statuses: list[int] = []

    def register() -> None:
        r = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 409, 409, 409]
    with Session(pg_engine) as db:
        assert len(db.scalars(select(UserRow).where(UserRow.email == email)).all()) == 1


# --- sign-in ---------------------------------------------------------------------------------


def test_wrong_password_and_unknown_email_get_the_same_answer(client: Client) -> None:
    created = client.register()
    wrong = client.post("/api/auth/login", json={"email": created["email"], "password": "nope" * 3})
    unknown = client.post(
        "/api/auth/login", json={"email": "nobody-here@example.com", "password": "nope" * 3}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "unauthorized"


def test_wrong_password_and_unknown_email_take_similar_time(data_dir: Path, pg_url: str) -> None:
    """Unknown emails are checked against a dummy hash, so timing does not reveal accounts.
    Uses the production argon2 cost so the hash dominates the timing."""
    settings = make_settings(
        data_dir,
        pg_url,
        argon2_time_cost=3,
        argon2_memory_cost_kib=65536,
        argon2_parallelism=4,
        login_max_failures_per_account=1000,
    )
    with TestClient(create_app(settings)) as http:
        client = Client(http)
        email = client.register()["email"]

        def timed(address: str) -> float:
            start = time.perf_counter()
            r = client.post("/api/auth/login", json={"email": address, "password": "wrong" * 3})
            assert r.status_code == 401
            return time.perf_counter() - start

        timed("warm-up@example.com")
        known = statistics.median(timed(email) for _ in range(5))
        unknown = statistics.median(timed(f"x{i}-nobody@example.com") for i in range(5))
    assert known > 0.01  # a real argon2 verification happened in both cases
    assert 0.5 < known / unknown < 2.0


def test_oauth2_password_form_signs_in_like_json(client: Client) -> None:
    created = client.register()
    response = client.post(
        "/api/auth/login", data={"username": created["email"], "password": PASSWORD}
    )
    assert response.status_code == 200
    assert _me(client, response.json()["access_token"]) == 200


def test_login_upgrades_a_hash_made_with_old_parameters(
    data_dir: Path, pg_url: str, pg_engine: Engine
) -> None:
    old = make_settings(data_dir, pg_url, argon2_time_cost=1, argon2_memory_cost_kib=1024)
    with TestClient(create_app(old)) as http:
        email = Client(http).register()["email"]
    new = make_settings(data_dir, pg_url, argon2_time_cost=2, argon2_memory_cost_kib=2048)
    with TestClient(create_app(new)) as http:
        Client(http).login(email)
    with Session(pg_engine) as db:
        stored = db.scalars(select(UserRow.hashed_password).where(UserRow.email == email)).one()
    assert "$m=2048,t=2," in stored


def test_inactive_account_cannot_sign_in_nor_use_its_tokens(
    client: Client, pg_engine: Engine
) -> None:
    user = client.user()
    with Session(pg_engine) as db:
        db.execute(update(UserRow).where(UserRow.email == user.email).values(is_active=False))
        db.commit()
    assert client.get("/api/auth/me", headers=user.headers).status_code == 401
    r = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


# --- refresh and sign-out ----------------------------------------------------------------------


def test_refresh_rotates_and_the_old_refresh_token_stops_working(client: Client) -> None:
    user = client.user()
    first = client.post("/api/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]})
    assert first.status_code == 200
    pair = first.json()
    assert pair["refresh_token"] != user.tokens["refresh_token"]
    assert _me(client, pair["access_token"]) == 200
    second = client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert second.status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    client: Client, pg_engine: Engine
) -> None:
    user = client.user()
    stolen = user.tokens["refresh_token"]
    rotated = client.post("/api/auth/refresh", json={"refresh_token": stolen}).json()
    replay = client.post("/api/auth/refresh", json={"refresh_token": stolen})
    assert replay.status_code == 401
    # the legitimate holder's newer token is dead too: the family is revoked
    legit = client.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert legit.status_code == 401
    with Session(pg_engine) as db:
        rows = db.scalars(
            select(RefreshToken).where(RefreshToken.user_id == uuid.UUID(user.id))
        ).all()
        assert rows
        assert all(row.revoked_at is not None for row in rows)
        assert {row.revoked_reason for row in rows} == {"reuse"}
        actions = db.scalars(
            select(AuditEvent.action).where(AuditEvent.user_id == uuid.UUID(user.id))
        ).all()
    assert "auth.refresh_reuse" in actions


def test_concurrent_refreshes_with_one_token_let_exactly_one_win(client: Client) -> None:
    user = client.user()
    statuses: list[int] = []
    barrier = threading.Barrier(3)

    def refresh() -> None:
        barrier.wait()
        r = client.post("/api/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=refresh) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 1
    assert statuses.count(401) == 2


# --- forks: a browser's cookie token and one family per tab ----------------------------------


def _fork(client: Client, token: str) -> tuple[int, dict[str, Any]]:
    response = client.post("/api/auth/fork", json={"refresh_token": token})
    return response.status_code, response.json()


def _refresh(client: Client, token: str) -> int:
    return int(client.post("/api/auth/refresh", json={"refresh_token": token}).status_code)


def test_a_fork_rotates_the_token_and_gives_a_family_of_its_own(client: Client) -> None:
    """The UI keeps one refresh token in the browser's cookie and forks a family per tab:
    each tab rotates its own tokens, never spending another tab's or the cookie's."""
    user = client.user()
    status, forked = _fork(client, user.tokens["refresh_token"])
    assert status == 200
    cookie, tab = forked["rotated"], forked["fork"]
    assert _me(client, tab["access_token"]) == 200
    assert len({cookie["refresh_token"], tab["refresh_token"], user.tokens["refresh_token"]}) == 3
    # a second tab forks from the cookie's new token; both tabs refresh on their own
    status, second = _fork(client, cookie["refresh_token"])
    assert status == 200
    tab_token, other_token = tab["refresh_token"], second["fork"]["refresh_token"]
    for _ in range(3):
        for token in (tab_token, other_token):
            pair = client.post("/api/auth/refresh", json={"refresh_token": token}).json()
            if token == tab_token:
                tab_token = pair["refresh_token"]
            else:
                other_token = pair["refresh_token"]
    assert _refresh(client, second["rotated"]["refresh_token"]) == 200


def test_tabs_restored_at_once_fork_from_the_same_cookie_without_a_reuse_alarm(
    client: Client,
) -> None:
    """A browser restoring five tabs sends the same cookie from each within a second."""
    user = client.user()
    statuses: list[int] = []
    barrier = threading.Barrier(5)

    def open_tab() -> None:
        barrier.wait()
        statuses.append(_fork(client, user.tokens["refresh_token"])[0])

    threads = [threading.Thread(target=open_tab) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 5


def test_a_stolen_cookie_token_used_after_the_grace_revokes_every_tab(
    tmp_path: Path, pg_url: str
) -> None:
    settings = make_settings(tmp_path, pg_url, refresh_fork_grace_seconds=0)
    with TestClient(create_app(settings)) as http:
        client = Client(http)
        user = client.user()
        stolen = user.tokens["refresh_token"]
        status, forked = _fork(client, stolen)
        assert status == 200
        time.sleep(0.05)
        assert _fork(client, stolen)[0] == 401  # the thief, later
        # the legitimate browser: its cookie's new token and its tab are revoked too
        assert _refresh(client, forked["rotated"]["refresh_token"]) == 401
        assert _refresh(client, forked["fork"]["refresh_token"]) == 401


def test_a_reused_tab_token_revokes_the_cookie_and_the_other_tabs(client: Client) -> None:
    user = client.user()
    _, first = _fork(client, user.tokens["refresh_token"])
    _, second = _fork(client, first["rotated"]["refresh_token"])
    tab = first["fork"]["refresh_token"]
    assert _refresh(client, tab) == 200
    assert _refresh(client, tab) == 401  # a replay of the tab's spent token
    assert _refresh(client, second["fork"]["refresh_token"]) == 401
    assert _fork(client, second["rotated"]["refresh_token"])[0] == 401


def test_a_tab_token_gets_no_grace_a_fork_right_after_its_refresh_is_reuse(
    client: Client,
) -> None:
    """Only the cookie's family (a root) may fork again within the grace: a stolen tab token
    replayed to /fork a second after the tab refreshed with it still trips the alarm."""
    user = client.user()
    _, first = _fork(client, user.tokens["refresh_token"])
    tab = first["fork"]["refresh_token"]
    assert _refresh(client, tab) == 200  # the tab, as usual
    assert _fork(client, tab)[0] == 401  # the thief, at once
    assert _refresh(client, first["rotated"]["refresh_token"]) == 401  # the tree is revoked


def test_signing_out_in_one_tab_signs_the_browser_out(client: Client) -> None:
    user = client.user()
    other_device = client.login(user.email)
    _, first = _fork(client, user.tokens["refresh_token"])
    _, second = _fork(client, first["rotated"]["refresh_token"])
    tab = first["fork"]
    response = client.post(
        "/api/auth/logout",
        headers={"Authorization": f"Bearer {tab['access_token']}"},
        json={"refresh_token": tab["refresh_token"]},
    )
    assert response.status_code == 204
    assert _refresh(client, second["fork"]["refresh_token"]) == 401
    assert _fork(client, second["rotated"]["refresh_token"])[0] == 401
    assert _refresh(client, other_device["refresh_token"]) == 200  # another sign-in stays


def test_an_access_token_is_not_a_refresh_token_and_vice_versa(client: Client) -> None:
    user = client.user()
    as_refresh = client.post(
        "/api/auth/refresh", json={"refresh_token": user.tokens["access_token"]}
    )
    assert as_refresh.status_code == 401
    assert _me(client, user.tokens["refresh_token"]) == 401


def test_logout_revokes_this_access_token_and_its_refresh_family_only(client: Client) -> None:
    user = client.user()
    other_device = client.login(user.email)
    response = client.post(
        "/api/auth/logout",
        headers=user.headers,
        json={"refresh_token": user.tokens["refresh_token"]},
    )
    assert response.status_code == 204
    assert _me(client, user.tokens["access_token"]) == 401
    gone = client.post("/api/auth/refresh", json={"refresh_token": user.tokens["refresh_token"]})
    assert gone.status_code == 401
    # the other device is still signed in
    assert _me(client, other_device["access_token"]) == 200
    still = client.post("/api/auth/refresh", json={"refresh_token": other_device["refresh_token"]})
    assert still.status_code == 200


def test_logout_everywhere_ends_every_session_of_the_user(client: Client) -> None:
    user = client.user()
    laptop, phone = client.login(user.email), client.login(user.email)
    response = client.post("/api/auth/logout", headers=user.headers, json={"everywhere": True})
    assert response.status_code == 204
    for tokens in (user.tokens, laptop, phone):
        assert _me(client, tokens["access_token"]) == 401
        r = client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert r.status_code == 401
    # signing in again works and gives working tokens
    assert _me(client, client.login(user.email)["access_token"]) == 200


def test_logout_cannot_revoke_somebody_elses_refresh_token(client: Client) -> None:
    alice, bob = client.user(), client.user()
    response = client.post(
        "/api/auth/logout",
        headers=alice.headers,
        json={"refresh_token": bob.tokens["refresh_token"]},
    )
    assert response.status_code == 204
    r = client.post("/api/auth/refresh", json={"refresh_token": bob.tokens["refresh_token"]})
    assert r.status_code == 200


def test_logout_without_a_body_works(client: Client) -> None:
    user = client.user()
    assert client.post("/api/auth/logout", headers=user.headers).status_code == 204
    assert _me(client, user.tokens["access_token"]) == 401


def test_short_ttls_expire_tokens(data_dir: Path, pg_url: str) -> None:
    settings = make_settings(data_dir, pg_url, access_token_ttl_minutes=1)
    with TestClient(create_app(settings)) as http:
        client = Client(http)
        user = client.user()
        assert user.tokens["expires_in"] == 60
        assert _me(client, user.tokens["access_token"]) == 200


# --- throttling ------------------------------------------------------------------------------


def _throttle_app(data_dir: Path, pg_url: str, **overrides: object) -> TestClient:
    settings = make_settings(
        data_dir, pg_url, login_max_failures_per_account=3, login_window_seconds=60, **overrides
    )
    return TestClient(create_app(settings))


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_failed_sign_ins_lock_the_account_with_retry_after(
    data_dir: Path, pg_url: str, redis_url: str, store: str
) -> None:
    extra = (
        {"redis_url": redis_url, "redis_prefix": f"test-{uuid.uuid4().hex}:"}
        if store == "redis"
        else {}
    )
    with _throttle_app(data_dir, pg_url, **extra) as http:
        client = Client(http)
        email = client.register()["email"]
        for _ in range(3):
            bad = client.post("/api/auth/login", json={"email": email, "password": "wrong" * 3})
            assert bad.status_code == 401
        locked = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["retry-after"]) <= 60
        assert locked.json()["error"]["code"] == "too_many_requests"
        # an unknown email is locked the same way (no enumeration through the limiter)
        for _ in range(3):
            client.post(
                "/api/auth/login", json={"email": "ghost@example.com", "password": "x" * 12}
            )
        ghost = client.post("/api/auth/login", json={"email": "ghost@example.com", "password": "x"})
        assert ghost.status_code == 429
        # other accounts are unaffected
        other = client.register()["email"]
        assert client.login(other)["access_token"]


def test_redis_counts_are_shared_between_api_replicas(
    data_dir: Path, pg_url: str, redis_url: str
) -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    with (
        _throttle_app(data_dir, pg_url, redis_url=redis_url, redis_prefix=prefix) as one,
        _throttle_app(data_dir, pg_url, redis_url=redis_url, redis_prefix=prefix) as two,
    ):
        email = Client(one).register()["email"]
        for http in (one, two, one):
            r = http.post("/api/auth/login", json={"email": email, "password": "bad" * 4})
            assert r.status_code == 401
        locked = two.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert locked.status_code == 429


def test_throttling_per_ip_limits_password_spraying(data_dir: Path, pg_url: str) -> None:
    with _throttle_app(data_dir, pg_url, login_max_failures_per_ip=4) as http:
        client = Client(http)
        emails = [client.register()["email"] for _ in range(5)]
        for email in emails[:4]:
            client.post("/api/auth/login", json={"email": email, "password": "Spring2026!!"})
        sprayed = client.post("/api/auth/login", json={"email": emails[4], "password": PASSWORD})
        assert sprayed.status_code == 429


def test_successful_sign_in_resets_the_account_counter(data_dir: Path, pg_url: str) -> None:
    with _throttle_app(data_dir, pg_url) as http:
        client = Client(http)
        email = client.register()["email"]
        for _ in range(2):
            client.post("/api/auth/login", json={"email": email, "password": "wrong" * 3})
        client.login(email)
        for _ in range(2):
            client.post("/api/auth/login", json={"email": email, "password": "wrong" * 3})
        assert client.login(email)["access_token"]


def test_registration_is_rate_limited_per_address(data_dir: Path, pg_url: str) -> None:
    settings = make_settings(data_dir, pg_url, register_max_per_ip_per_hour=2)
    with TestClient(create_app(settings)) as http:
        client = Client(http)
        client.register()
        client.register()
        third = client.post(
            "/api/auth/register", json={"email": "third@example.com", "password": PASSWORD}
        )
        assert third.status_code == 429
        assert int(third.headers["retry-after"]) > 0


def test_redis_outage_falls_back_to_counting_in_process(data_dir: Path, pg_url: str) -> None:
    with _throttle_app(data_dir, pg_url, redis_url="redis://127.0.0.1:1/0") as http:
        client = Client(http)
        email = client.register()["email"]
        for _ in range(3):
            client.post("/api/auth/login", json={"email": email, "password": "wrong" * 3})
        assert (
            client.post("/api/auth/login", json={"email": email, "password": PASSWORD}).status_code
            == 429
        )


def test_sign_ins_are_audited(client: Client, pg_engine: Engine) -> None:
    user = client.user()
    client.post("/api/auth/login", json={"email": user.email, "password": "wrong" * 3})
    with Session(pg_engine) as db:
        events = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.user_id == uuid.UUID(user.id))
            .order_by(AuditEvent.created_at)
        ).all()
    actions = [e.action for e in events]
    assert actions == ["auth.register", "auth.login", "auth.login_failed"]
    assert all(e.request_id and e.ip == "testclient" for e in events)
