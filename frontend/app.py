"""Quarry's chat UI: `streamlit run frontend/server.py` (QUARRY_API_URL says where the API
is), which serves this script with the routes that keep a browser signed in.

A thin entrypoint: sign-in gate (or signing back in from the browser's cookie), navigation,
and the pages of frontend/views/. Every call to the backend goes through frontend/client.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run frontend/app.py` puts frontend/ on the path, not the project
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from frontend import render, state
from frontend.views import auth, charts, chat, datasets, model


def main() -> None:
    st.set_page_config(page_title="Quarry", page_icon=":material/query_stats:", layout="wide")
    render.page_style()
    pages = [
        st.Page(chat.page, title="Chat", icon=":material/chat:", url_path="chat", default=True),
        st.Page(datasets.page, title="Datasets", icon=":material/table:", url_path="datasets"),
        st.Page(charts.page, title="Charts", icon=":material/bar_chart:", url_path="charts"),
        st.Page(model.page, title="Model", icon=":material/psychology:", url_path="model"),
    ]
    state.set_pages({p.url_path: p for p in pages})
    # Every run names the pages, signed in or not: a run without them loses the address's
    # page (a reload of /charts?session=... would land on the default page).
    navigation = st.navigation(pages, position="sidebar" if state.user() else "hidden")
    if state.user() is None and not state.resume():
        auth.page()
        state.sync_browser()
        return
    with st.sidebar:
        user = state.user() or {}
        st.caption(f"Signed in as **{user.get('email', '')}**")
        if st.button("Sign out", key="sign-out", help="Sign out of this browser"):
            state.sign_out()
            st.rerun()
        if st.button(
            "Sign out everywhere", key="sign-out-everywhere", type="tertiary",
            help="Sign out on every device and browser, at once",
        ):  # fmt: skip
            state.sign_out(everywhere=True)
            st.rerun()
        state.sync_browser()
    navigation.run()


main()
