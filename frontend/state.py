"""What one browser tab holds: its API client (with the user's tokens), the signed-in user,
the open session (mirrored in the URL), a question waiting for a sign-in; and how the tab
signs in from the browser's cookie and keeps that cookie right (frontend/browser.py)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend import browser
from frontend.client import APIError, QuarryClient, SignedOut

RESUME_WAIT_S = 10.0


def client() -> QuarryClient:
    if "client" not in st.session_state:
        st.session_state["client"] = QuarryClient()
    found: QuarryClient = st.session_state["client"]
    return found


def user() -> dict[str, Any] | None:
    return st.session_state.get("user")


def sign_in(found: dict[str, Any]) -> None:
    st.session_state["user"] = found


def sign_out(message: str | None = None, everywhere: bool = False) -> None:
    """Back to the sign-in page, keeping what the user was typing. The browser's cookie is
    cleared as well (its token was revoked with this tab's: they are one tree)."""
    client().logout(everywhere)
    st.session_state.pop("user", None)
    st.session_state["resumed"] = True  # the cookie this tab saw at load is dead now
    _browser_does("forget", browser.expect("forget"))
    if message:
        st.session_state["signed_out_because"] = message


def remember_browser() -> None:
    """After signing in: this tab forks a family of its own, and the browser keeps the other
    token in its cookie, so that a reload or a new tab stays signed in."""
    try:
        rotated = client().fork()
    except APIError:
        return  # staying signed in is lost, not this tab: it keeps the login's tokens
    nonce = browser.expect("remember", rotated["refresh_token"], int(rotated["refresh_expires_in"]))
    _browser_does("remember", nonce)


def resume() -> bool:
    """Sign this tab in from the browser's cookie (a reload, a new tab, a bookmark, a UI
    restart): the browser brings the cookie to frontend/server.py, which forks this tab's
    tokens from it. Tried once per tab; False when there is no cookie or it is dead."""
    if st.session_state.get("resumed") or browser.COOKIE not in st.context.cookies:
        return False
    st.session_state["resumed"] = True
    nonce = browser.expect("resume")
    note = st.empty()
    with note.container():
        st.caption("Signing you back in…")
        st.html(browser.script("resume", nonce), unsafe_allow_javascript=True)
    result = browser.wait(nonce, RESUME_WAIT_S)
    note.empty()
    if not result or "access" not in result:
        if result and result.get("error"):
            st.session_state["signed_out_because"] = result["error"]
        return False
    try:
        sign_in(client().resume(result["access"], result["refresh"]))
    except APIError as exc:
        st.session_state["signed_out_because"] = exc.message
        return False
    st.rerun()  # the page from the top, without the note: its elements keep their places


def _browser_does(kind: str, nonce: str) -> None:
    st.session_state["browser_pending"] = (kind, nonce)


def sync_browser() -> None:
    """On every run: while a cookie change is pending, the page asks the browser to make
    it (the script runs once the element is on the page). Always one element, filled or
    not, so that the elements after it keep their place (an open popover stays open)."""
    slot = st.empty()
    pending = st.session_state.get("browser_pending")
    if not pending:
        return
    kind, nonce = pending
    if browser.finished(nonce):
        del st.session_state["browser_pending"]
        return
    with slot:
        st.html(browser.script(kind, nonce), unsafe_allow_javascript=True)


def session_id() -> str | None:
    """The open session: the URL's `?session=` (a bookmark, a link, a new tab), else the one
    this tab had open on another page (a sidebar link drops the URL's parameters), which
    is put back in the URL."""
    value = st.query_params.get("session")
    if value:
        st.session_state["open_session"] = str(value)
        return str(value)
    kept = st.session_state.get("open_session")
    if kept:
        st.query_params["session"] = kept
    return str(kept) if kept else None


def open_session(found: str | None) -> None:
    if found:
        st.query_params["session"] = found
        st.session_state["open_session"] = found
    else:
        st.session_state.pop("open_session", None)
        if "session" in st.query_params:
            del st.query_params["session"]


def fail(exc: APIError) -> None:
    """A failure the user can read, and the page stops there (never a traceback)."""
    if isinstance(exc, SignedOut):
        sign_out(exc.message)
        st.rerun()
    st.error(exc.message, icon=":material/error:")
    st.stop()


def set_pages(pages: dict[str, Any]) -> None:
    """The app's pages by url path, for links between them (`st.page_link`)."""
    st.session_state["pages"] = pages


def page(name: str) -> Any | None:
    return st.session_state.get("pages", {}).get(name)
