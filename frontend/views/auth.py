"""Sign in and register."""

from __future__ import annotations

import streamlit as st

from frontend import state
from frontend.client import APIError


def page() -> None:
    st.title("Quarry")
    st.caption("Ask questions about your data in plain language; watch the agent work.")
    why = st.session_state.pop("signed_out_because", None)
    if why:
        st.warning(why)
    if st.session_state.get("pending_question"):
        st.info("Your question is kept: it will be asked once you are signed in.")
    sign_in, register = st.tabs(["Sign in", "Create an account"])
    client = state.client()
    with sign_in, st.form("sign-in"):
        email = st.text_input("Email", key="login-email")
        password = st.text_input("Password", type="password", key="login-password")
        if st.form_submit_button("Sign in", type="primary"):
            try:
                state.sign_in(client.login(email.strip(), password))
                state.remember_browser()
            except APIError as exc:
                st.error(exc.message)
            else:
                st.rerun()
    with register, st.form("register"):
        name = st.text_input("Name (optional)", key="register-name")
        new_email = st.text_input("Email", key="register-email")
        new_password = st.text_input(
            "Password", type="password", key="register-password",
            help="At least 10 characters; not a common password.",
        )  # fmt: skip
        if st.form_submit_button("Create the account", type="primary"):
            try:
                client.register(new_email.strip(), new_password, name.strip() or None)
                state.sign_in(client.login(new_email.strip(), new_password))
                state.remember_browser()
            except APIError as exc:
                st.error(exc.message)
            else:
                st.rerun()
