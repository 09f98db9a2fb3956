"""Quarry's HTTP API as the UI sees it: the one place the UI talks to the backend.

It holds the user's tokens and nothing else: no database, no secrets. An expired access
token is refreshed once, silently; when that fails too, `SignedOut` tells the page to send
the user back to sign in. Every other failure is an `APIError` carrying the API's own
message (what to fix), never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
UPLOAD_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def api_url() -> str:
    return os.environ.get("QUARRY_API_URL", DEFAULT_URL).rstrip("/")


class APIError(Exception):
    """The API said no (or could not be reached): `message` is for the user."""

    def __init__(self, message: str, status: int = 0, code: str = "", retry_after: int = 0):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after


class SignedOut(APIError):
    """The session ended (expired or revoked tokens): sign in again."""


@dataclass
class Tokens:
    access: str
    refresh: str


def _error_of(response: httpx.Response) -> APIError:
    try:
        body = response.json().get("error") or {}
    except (ValueError, AttributeError):
        body = {}
    message = str(body.get("message") or f"The server answered {response.status_code}.")
    details = body.get("details") or []
    if details and response.status_code == 422:
        message = "; ".join(str(d.get("message", "")) for d in details if d.get("message"))
        message = message or str(body.get("message"))
    retry = int(response.headers.get("Retry-After", "0") or 0)
    if response.status_code == 429 and retry:
        message = f"{message} (try again in {retry} s)"
    return APIError(message, response.status_code, str(body.get("code", "")), retry)


@dataclass
class QuarryClient:
    base_url: str = field(default_factory=api_url)
    tokens: Tokens | None = None
    on_tokens: Callable[[Tokens | None], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=self.base_url, timeout=TIMEOUT)

    # --- plumbing ---------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.access}"} if self.tokens else {}

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.TimeoutException:
            raise APIError("The Quarry server took too long to answer; try again.") from None
        except httpx.HTTPError:
            raise APIError(
                f"Cannot reach the Quarry API at {self.base_url}; is it running (QUARRY_API_URL)?"
            ) from None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and self.tokens is not None:
            self._refresh()
            response = self._send(method, path, **kwargs)
        if response.status_code == 401:
            raise SignedOut("Your session has ended; please sign in again.", 401)
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    def _set_tokens(self, tokens: Tokens | None) -> None:
        self.tokens = tokens
        if self.on_tokens is not None:
            self.on_tokens(tokens)

    def _refresh(self) -> None:
        with self._lock:
            tokens = self.tokens
            if tokens is None:
                raise SignedOut("Please sign in.", 401)
            try:
                response = self._http.post(
                    "/api/auth/refresh", json={"refresh_token": tokens.refresh}
                )
            except httpx.HTTPError:
                raise APIError(f"Cannot reach the Quarry API at {self.base_url}.") from None
            if response.status_code != 200:
                self._set_tokens(None)
                raise SignedOut("Your session has ended; please sign in again.", 401)
            body = response.json()
            self._set_tokens(Tokens(body["access_token"], body["refresh_token"]))

    def close(self) -> None:
        self._http.close()

    # --- accounts -----------------------------------------------------------------------
    def register(self, email: str, password: str, full_name: str | None = None) -> Any:
        body = {"email": email, "password": password, "full_name": full_name or None}
        return self.json("POST", "/api/auth/register", json=body)

    def login(self, email: str, password: str) -> Any:
        response = self._send(
            "POST", "/api/auth/login", json={"email": email, "password": password}
        )
        if response.status_code >= 400:
            raise _error_of(response)
        body = response.json()
        self._set_tokens(Tokens(body["access_token"], body["refresh_token"]))
        return self.me()

    def me(self) -> Any:
        return self.json("GET", "/api/auth/me")

    def fork(self) -> dict[str, Any]:
        """Fork a family of tokens for this client from its refresh token (which is spent),
        and switch to it; the answer is the spent token's successor (for the browser's
        cookie: `refresh_token`, `refresh_expires_in`)."""
        if self.tokens is None:
            raise SignedOut("Please sign in.", 401)
        response = self._send("POST", "/api/auth/fork", json={"refresh_token": self.tokens.refresh})
        if response.status_code >= 400:
            raise _error_of(response)
        body = response.json()
        fork = body["fork"]
        self._set_tokens(Tokens(fork["access_token"], fork["refresh_token"]))
        return dict(body["rotated"])

    def resume(self, access: str, refresh: str) -> Any:
        """Use tokens forked elsewhere (the browser's cookie, by frontend/server.py)."""
        self._set_tokens(Tokens(access, refresh))
        return self.me()

    def logout(self, everywhere: bool = False) -> None:
        """Sign out this client (and the browser it is in: its cookie's family and every
        tab's are one tree), or every device."""
        if self.tokens is not None:
            with contextlib.suppress(APIError):  # signing out here is what matters
                body = {"refresh_token": self.tokens.refresh, "everywhere": everywhere}
                self.json("POST", "/api/auth/logout", json=body)
        self._set_tokens(None)

    def upload_formats(self) -> list[str]:
        return list(self.json("GET", "/api/upload-formats")["extensions"])

    def model_info(self) -> Any:
        return self.json("GET", "/api/model")

    # --- datasets -------------------------------------------------------------------------
    def upload(
        self, filename: str, content: bytes, name: str | None = None, description: str = ""
    ) -> Any:
        data = {k: v for k, v in {"name": name, "description": description}.items() if v}
        files = {"file": (filename, content, "application/octet-stream")}
        return self.json("POST", "/api/datasets", files=files, data=data, timeout=UPLOAD_TIMEOUT)

    def datasets(self, limit: int = 200) -> list[Any]:
        return list(self.json("GET", "/api/datasets", params={"limit": limit})["data"])

    def dataset(self, dataset_id: str) -> Any:
        return self.json("GET", f"/api/datasets/{dataset_id}")

    def preview(self, dataset_id: str, limit: int = 50) -> Any:
        return self.json("GET", f"/api/datasets/{dataset_id}/preview", params={"limit": limit})

    def update_dataset(self, dataset_id: str, **fields: Any) -> Any:
        return self.json("PATCH", f"/api/datasets/{dataset_id}", json=fields)

    def download(self, dataset_id: str, fmt: str = "csv") -> bytes:
        path = f"/api/datasets/{dataset_id}/download"
        return self.request("GET", path, params={"format": fmt}, timeout=UPLOAD_TIMEOUT).content

    def delete_dataset(self, dataset_id: str) -> None:
        self.json("DELETE", f"/api/datasets/{dataset_id}")

    # --- sessions -------------------------------------------------------------------------
    def sessions(self, limit: int = 100) -> list[Any]:
        return list(self.json("GET", "/api/sessions", params={"limit": limit})["data"])

    def session(self, session_id: str) -> Any:
        return self.json("GET", f"/api/sessions/{session_id}")

    def create_session(self, dataset_ids: list[str], title: str | None = None) -> Any:
        body: dict[str, Any] = {"dataset_ids": dataset_ids}
        if title:
            body["title"] = title
        return self.json("POST", "/api/sessions", json=body)

    def update_session(self, session_id: str, **fields: Any) -> Any:
        return self.json("PATCH", f"/api/sessions/{session_id}", json=fields)

    def delete_session(self, session_id: str) -> None:
        self.json("DELETE", f"/api/sessions/{session_id}")

    def _all(self, path: str) -> list[Any]:
        found: list[Any] = []
        while True:
            page = self.json("GET", path, params={"limit": 200, "offset": len(found)})
            found += page["data"]
            if len(found) >= page["count"] or not page["data"]:
                return found

    def messages(self, session_id: str) -> list[Any]:
        return self._all(f"/api/sessions/{session_id}/messages")

    def suggestions(self, session_id: str) -> list[str]:
        return list(self.json("GET", f"/api/sessions/{session_id}/suggestions")["data"])

    def executions(self, session_id: str) -> list[Any]:
        return self._all(f"/api/sessions/{session_id}/executions")

    def visualizations(self, session_id: str) -> list[Any]:
        return self._all(f"/api/sessions/{session_id}/visualizations")

    def recent_visualizations(self, limit: int = 20) -> list[Any]:
        """The user's newest charts across sessions."""
        return list(self.json("GET", "/api/visualizations", params={"limit": limit})["data"])

    def visualization(self, visualization_id: str) -> Any:
        return self.json("GET", f"/api/visualizations/{visualization_id}")

    def export_notebook(self, session_id: str) -> bytes:
        return self.request("GET", f"/api/sessions/{session_id}/export.ipynb").content

    # --- runs -----------------------------------------------------------------------------
    def ask(self, session_id: str, question: str) -> Any:
        return self.json("POST", f"/api/sessions/{session_id}/messages", json={"content": question})

    def execute(self, session_id: str, code: str) -> Any:
        return self.json("POST", f"/api/sessions/{session_id}/executions", json={"code": code})

    def run(self, run_id: str) -> Any:
        return self.json("GET", f"/api/runs/{run_id}")

    def cancel(self, run_id: str) -> Any:
        return self.json("POST", f"/api/runs/{run_id}/cancel")

    def events(self, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """The run's events as they happen (Server-Sent Events), until `done`. A dropped
        connection resumes after the last event seen."""
        seen = after
        for _ in range(5):  # reconnects
            try:
                for event in self._stream(run_id, seen):
                    seen = int(event["seq"])
                    yield event
                    if event["type"] == "done":
                        return
            except (httpx.TransportError, httpx.TimeoutException):
                continue
            return  # the stream ended without `done` (a very old run)
        raise APIError("Lost the connection to the Quarry API while following the answer.")

    def _stream(self, run_id: str, after: int) -> Iterator[dict[str, Any]]:
        path = f"/api/runs/{run_id}/events"
        timeout = httpx.Timeout(60.0, connect=5.0)  # heartbeats come every 15 s
        for attempt in range(2):
            headers = {**self._headers(), "Last-Event-ID": str(after)}
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.status_code == 401 and attempt == 0 and self.tokens is not None:
                    self._refresh()
                    continue
                if response.status_code == 401:
                    raise SignedOut("Your session has ended; please sign in again.", 401)
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
                return
