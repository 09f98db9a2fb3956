"""What one browser tab holds: its API client (with the user's tokens), the signed-in user,
the open session (mirrored in the URL), a question waiting for a sign-in."""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend.client import APIError, QuarryClient, SignedOut


def client() -> QuarryClient:
    if "client" not in st.session_state:
        st.session_state["client"] = QuarryClient()
    found: QuarryClient = st.session_state["client"]
    return found


def user() -> dict[str, Any] | None:
    return st.session_state.get("user")


def sign_in(found: dict[str, Any]) -> None:
    st.session_state["user"] = found


def sign_out(message: str | None = None) -> None:
    """Back to the sign-in page, keeping what the user was typing."""
    client().logout()
    st.session_state.pop("user", None)
    if message:
        st.session_state["signed_out_because"] = message


def session_id() -> str | None:
    value = st.query_params.get("session")
    return str(value) if value else None


def open_session(found: str | None) -> None:
    if found:
        st.query_params["session"] = found
    elif "session" in st.query_params:
        del st.query_params["session"]


def fail(exc: APIError) -> None:
    """A failure the user can read, and the page stops there (never a traceback)."""
    if isinstance(exc, SignedOut):
        sign_out(exc.message)
        st.rerun()
    st.error(exc.message, icon=":material/error:")
    st.stop()
