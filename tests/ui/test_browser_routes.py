"""The UI server's sign-in cookie routes (frontend/server.py) against the real API process of
tests/ui/conftest.py: what the browser is given, and what a page or another site cannot do
with them. The whole flow in Chromium is tests/e2e/test_ui_browser.py."""

from __future__ import annotations

import uuid

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from frontend import browser, server
from frontend.client import QuarryClient

PASSWORD = "correct horse battery"


@pytest.fixture
def ui() -> TestClient:
    return TestClient(Starlette(routes=server.routes), base_url="http://ui.test")


def signed_in(api_url: str) -> QuarryClient:
    client = QuarryClient(api_url)
    email = f"cookie-{uuid.uuid4().hex[:10]}@example.com"
    client.register(email, PASSWORD)
    client.login(email, PASSWORD)
    return client


def set_cookie(response: object) -> str:
    return "; ".join(response.headers.get_list("set-cookie"))  # type: ignore[attr-defined]


def test_remember_keeps_the_token_in_an_httponly_strict_cookie(ui: TestClient) -> None:
    nonce = browser.expect("remember", "the-refresh-token", 600)
    response = ui.post("/_quarry/remember", json={"nonce": nonce})
    assert response.status_code == 204
    cookie = set_cookie(response).lower()
    assert cookie.startswith(f"{browser.COOKIE}=the-refresh-token")
    for attribute in ("httponly", "samesite=strict", "path=/", "max-age=600"):
        assert attribute in cookie
    assert "secure" not in cookie  # plain HTTP on a laptop could not keep it
    assert browser.finished(nonce)
    # a nonce is good once
    again = ui.post("/_quarry/remember", json={"nonce": nonce})
    assert again.status_code == 404


def test_a_nonce_works_only_for_its_own_route_and_never_cross_site(ui: TestClient) -> None:
    nonce = browser.expect("forget")
    assert ui.post("/_quarry/remember", json={"nonce": nonce}).status_code == 404
    assert browser.claim(nonce, "remember") is None
    assert ui.post("/_quarry/resume", json={"nonce": "made-up"}).status_code == 404
    assert ui.post("/_quarry/forget", content=b"not json").status_code == 400
    other_site = ui.post(
        "/_quarry/forget", json={"nonce": nonce}, headers={"Origin": "https://evil.example"}
    )
    assert other_site.status_code == 403
    cleared = ui.post(
        "/_quarry/forget", json={"nonce": nonce}, headers={"Origin": "http://ui.test"}
    )
    assert cleared.status_code == 204
    assert f'{browser.COOKIE}=""' in set_cookie(cleared)
    assert "Max-Age=0" in set_cookie(cleared)


def test_resume_forks_the_tabs_tokens_and_rotates_the_cookie(ui: TestClient, api_url: str) -> None:
    client = signed_in(api_url)
    assert client.tokens is not None
    cookie = client.fork()["refresh_token"]  # what the browser keeps after signing in
    nonce = browser.expect("resume")
    ui.cookies.set(browser.COOKIE, cookie)
    response = ui.post("/_quarry/resume", json={"nonce": nonce})
    assert response.status_code == 204
    rotated = response.cookies.get(browser.COOKIE)
    assert rotated
    assert rotated != cookie
    result = browser.wait(nonce, 1)
    assert result is not None
    tab = QuarryClient(api_url)
    assert tab.resume(result["access"], result["refresh"])["email"].startswith("cookie-")


def test_resume_with_a_dead_cookie_clears_it_and_says_to_sign_in(
    ui: TestClient, api_url: str
) -> None:
    client = signed_in(api_url)
    cookie = client.fork()["refresh_token"]
    client.logout()  # revokes the whole tree, the cookie's family too
    nonce = browser.expect("resume")
    ui.cookies.set(browser.COOKIE, cookie)
    response = ui.post("/_quarry/resume", json={"nonce": nonce})
    assert response.status_code == 204
    assert "Max-Age=0" in set_cookie(response)
    assert browser.wait(nonce, 1) == {"error": server.ENDED}


def test_two_requests_with_one_nonce_get_one_answer() -> None:
    """Claimed is taken: a second request with the same nonce, even before the first one
    has finished, is refused."""
    nonce = browser.expect("resume")
    assert browser.claim(nonce, "resume") is not None
    assert browser.claim(nonce, "resume") is None
