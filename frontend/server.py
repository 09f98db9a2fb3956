"""The UI server: Streamlit's app (frontend/app.py) and the routes that keep a browser signed
in (`streamlit run frontend/server.py`; see frontend/browser.py).

The routes are the only place the refresh token cookie is set, read or cleared: HttpOnly
(page scripts never see it), SameSite=Strict (no other site's page sends it), Secure on
HTTPS, Path=/. Each takes a one-time nonce that the tab's own Streamlit session issued.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# `streamlit run frontend/server.py` puts frontend/ on the path, not the project
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2 as httpx
import streamlit as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from frontend import browser
from frontend.client import TIMEOUT, api_url

ENDED = "Your session has ended; please sign in again."


def _refused(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message}}, status_code=status)


async def _nonce(request: Request, kind: str) -> tuple[str, browser.Handoff] | Response:
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        return _refused(403, "Cross-origin request refused.")
    try:
        nonce = str((await request.json())["nonce"])
    except (ValueError, KeyError, TypeError):
        return _refused(400, 'Send {"nonce": ...} as JSON.')
    handoff = browser.claim(nonce, kind)
    if handoff is None:
        return _refused(404, "Unknown or expired nonce.")
    return nonce, handoff


def _attributes(request: Request) -> dict[str, Any]:
    """The cookie's attributes: setting and clearing it must name the same ones."""
    return {
        "path": "/",
        "httponly": True,
        "samesite": "strict",
        "secure": browser.secure_cookie(request.url.scheme),
    }


def _keep(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(browser.COOKIE, token, max_age=max_age, **_attributes(request))


def _drop(response: Response, request: Request) -> None:
    response.delete_cookie(browser.COOKIE, **_attributes(request))


async def resume(request: Request) -> Response:
    """Fork this tab's tokens from the cookie's; the rotated token goes back in the cookie."""
    found = await _nonce(request, "resume")
    if isinstance(found, Response):
        return found
    nonce, _ = found
    response = Response(status_code=204)
    token = request.cookies.get(browser.COOKIE)
    if not token:
        browser.finish(nonce, {"error": ""})
        return response
    try:
        async with httpx.AsyncClient(base_url=api_url(), timeout=TIMEOUT) as http:
            answer = await http.post("/api/auth/fork", json={"refresh_token": token})
    except httpx.HTTPError:
        browser.finish(nonce, {"error": f"Cannot reach the Quarry API at {api_url()}."})
        return response  # the cookie stays: the API may be back on the next load
    if answer.status_code == 200:
        body = answer.json()
        rotated, tab = body["rotated"], body["fork"]
        _keep(response, request, rotated["refresh_token"], int(rotated["refresh_expires_in"]))
        browser.finish(nonce, {"access": tab["access_token"], "refresh": tab["refresh_token"]})
    elif answer.status_code in (400, 401, 422):
        _drop(response, request)
        browser.finish(nonce, {"error": ENDED})
    else:
        browser.finish(nonce, {"error": f"The Quarry API answered {answer.status_code}."})
    return response


async def remember(request: Request) -> Response:
    found = await _nonce(request, "remember")
    if isinstance(found, Response):
        return found
    nonce, handoff = found
    response = Response(status_code=204)
    if handoff.token:
        _keep(response, request, handoff.token, handoff.max_age)
    browser.finish(nonce)
    return response


async def forget(request: Request) -> Response:
    found = await _nonce(request, "forget")
    if isinstance(found, Response):
        return found
    response = Response(status_code=204)
    _drop(response, request)
    browser.finish(found[0])
    return response


routes = [
    Route(f"{browser.PREFIX}/{name}", handler, methods=["POST"])
    for name, handler in (("resume", resume), ("remember", remember), ("forget", forget))
]
app = st.App("app.py", routes=routes)
