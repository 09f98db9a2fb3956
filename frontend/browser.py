"""Staying signed in: the browser keeps one refresh token in an HttpOnly cookie.

Page scripts never see the token. The UI server sets and reads the cookie on its own routes
(`frontend/server.py` mounts them beside Streamlit), and a tab's Streamlit session — which
cannot set cookies, and sees only the cookies of the page's first request — asks the browser
to call them with a one-time nonce:

- **resume** (a reload, a new tab, a bookmark, a UI restart): the route forks a family of
  tokens for this tab from the cookie's token (`POST /api/auth/fork`), puts the rotated token
  back in the cookie in the same response, and hands the tab's tokens to the session that
  issued the nonce. Tabs each refresh their own family, so normal multi-tab use never
  presents a spent token, while a stolen token still does (see docs/SECURITY.md).
- **remember** (after signing in): the route sets the cookie to the token the session left
  under the nonce.
- **forget** (after signing out): the route clears the cookie.

Handoffs live in this process: with several UI replicas, the tab's websocket and its calls
need the session affinity Streamlit needs anyway.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

COOKIE = "quarry_refresh"
PREFIX = "/_quarry"
NONCE_TTL_S = 60.0


@dataclass
class Handoff:
    kind: str  # resume | remember | forget
    token: str | None = None  # remember: the refresh token to keep
    max_age: int = 0  # remember: its lifetime in seconds
    result: dict[str, Any] | None = None  # resume: {"access", "refresh"} or {"error"}
    created: float = field(default_factory=time.monotonic)
    taken: bool = False  # a route has claimed it: a nonce is good for one request
    done: threading.Event = field(default_factory=threading.Event)


_lock = threading.Lock()
_handoffs: dict[str, Handoff] = {}


def expect(kind: str, token: str | None = None, max_age: int = 0) -> str:
    """A one-time nonce for the browser to bring to the route `kind`."""
    nonce = secrets.token_urlsafe(32)
    now = time.monotonic()
    with _lock:
        for key in [k for k, h in _handoffs.items() if now - h.created > NONCE_TTL_S]:
            del _handoffs[key]
        _handoffs[nonce] = Handoff(kind, token, max_age)
    return nonce


def claim(nonce: str, kind: str) -> Handoff | None:
    """The route's side: the handoff of this nonce, if it is one of `kind` still waiting."""
    with _lock:
        found = _handoffs.get(nonce)
        if found is None or found.kind != kind or found.taken:
            return None
        if time.monotonic() - found.created > NONCE_TTL_S:
            del _handoffs[nonce]
            return None
        found.taken = True
        return found


def finish(nonce: str, result: dict[str, Any] | None = None) -> None:
    with _lock:
        found = _handoffs.get(nonce)
    if found is not None:
        found.result = result
        found.done.set()


def wait(nonce: str, timeout: float) -> dict[str, Any] | None:
    """The session's side: what the route found (None: the browser never came)."""
    with _lock:
        found = _handoffs.get(nonce)
    if found is None or not found.done.wait(timeout):
        return None
    with _lock:
        _handoffs.pop(nonce, None)
    return found.result


def finished(nonce: str) -> bool:
    with _lock:
        found = _handoffs.get(nonce)
        if found is None:
            return True  # expired: nothing more will happen
        if found.done.is_set():
            del _handoffs[nonce]
            return True
        return False


def script(kind: str, nonce: str) -> str:
    """What the page runs: one same-origin POST carrying the nonce (the cookie goes with it,
    and comes back set or cleared)."""
    url = json.dumps(f"{PREFIX}/{kind}")
    body = json.dumps({"nonce": nonce})  # token_urlsafe: nothing to escape in a script
    return (
        "<script>fetch("
        f"{url}, {{method: 'POST', credentials: 'same-origin', "
        f"headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({body})}})"
        "</script>"
    )


def secure_cookie(scheme: str) -> bool:
    """`Secure` on HTTPS (or when QUARRY_COOKIE_SECURE=1 behind a proxy that ends TLS
    without saying so); plain HTTP on a laptop could not keep a Secure cookie."""
    return scheme == "https" or os.environ.get("QUARRY_COOKIE_SECURE", "") in ("1", "true")
