"""frontend/client.py against the real API process: what every page relies on."""

from __future__ import annotations

import uuid

import pytest

from frontend.client import APIError, QuarryClient, SignedOut, Tokens

PASSWORD = "correct horse battery"


def test_an_expired_access_token_is_refreshed_silently(api_url: str) -> None:
    seen: list[Tokens | None] = []
    client = QuarryClient(api_url, on_tokens=seen.append)
    email = f"client-{uuid.uuid4().hex[:8]}@example.com"
    client.register(email, PASSWORD)
    client.login(email, PASSWORD)
    assert client.tokens is not None
    refresh = client.tokens.refresh
    client.tokens = Tokens("not-a-valid-token", refresh)
    assert client.me()["email"] == email  # refreshed, then answered
    assert client.tokens.refresh != refresh  # rotated
    assert len(seen) == 2  # login, refresh

    client.tokens = Tokens("not-a-valid-token", refresh)  # a spent refresh token
    with pytest.raises(SignedOut):
        client.me()
    assert client.tokens is None


def test_errors_carry_the_apis_message_and_an_unreachable_api_says_so(api_url: str) -> None:
    client = QuarryClient(api_url)
    with pytest.raises(APIError) as weak:
        client.register(f"c-{uuid.uuid4().hex[:8]}@example.com", "short")
    assert weak.value.status == 422
    assert "at least 10 characters" in weak.value.message
    gone = QuarryClient("http://127.0.0.1:9")
    with pytest.raises(APIError) as unreachable:
        gone.me()
    assert "Cannot reach the Quarry API" in unreachable.value.message


def test_a_runs_events_stream_to_done(api_url: str) -> None:
    client = QuarryClient(api_url)
    email = f"client-{uuid.uuid4().hex[:8]}@example.com"
    client.register(email, PASSWORD)
    client.login(email, PASSWORD)
    session_id = client.create_session([])["id"]
    run_id = client.execute(session_id, "1 + 1")["run_id"]
    kinds = [e["type"] for e in client.events(run_id)]
    assert kinds[-1] == "done"
    assert "result" in kinds
    resumed = [e["type"] for e in client.events(run_id, after=len(kinds) - 1)]
    assert resumed == ["done"]
