"""Quarry's chat UI: `streamlit run frontend/app.py` (QUARRY_API_URL says where the API is).

A thin entrypoint: sign-in gate, navigation, and the pages of frontend/views/. Every call
to the backend goes through frontend/client.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run frontend/app.py` puts frontend/ on the path, not the project
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from frontend import state
from frontend.views import auth, charts, chat, datasets, model


def main() -> None:
    st.set_page_config(page_title="Quarry", page_icon=":material/query_stats:", layout="wide")
    if state.user() is None:
        auth.page()
        return
    pages = [
        st.Page(chat.page, title="Chat", icon=":material/chat:", url_path="chat", default=True),
        st.Page(datasets.page, title="Datasets", icon=":material/table:", url_path="datasets"),
        st.Page(charts.page, title="Charts", icon=":material/bar_chart:", url_path="charts"),
        st.Page(model.page, title="Model", icon=":material/psychology:", url_path="model"),
    ]
    navigation = st.navigation(pages)
    with st.sidebar:
        user = state.user() or {}
        st.caption(f"Signed in as **{user.get('email', '')}**")
        if st.button("Sign out", key="sign-out"):
            state.sign_out()
            st.rerun()
    navigation.run()


main()
