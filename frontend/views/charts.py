"""Every chart of the open session, newest first, downloadable as HTML and JSON."""

from __future__ import annotations

import json

import plotly.io as pio
import streamlit as st

from frontend import render, state
from frontend.client import APIError


def page() -> None:
    st.title("Charts")
    client = state.client()
    current = state.session_id()
    try:
        if current is None:
            charts = client.recent_visualizations()
            titles = {s["id"]: s["title"] for s in client.sessions()}
        else:
            charts = client.visualizations(current)
            titles = {}
    except APIError as exc:
        state.fail(exc)
        return
    if not charts:
        if current is None:
            st.info("No charts yet: ask for one in a chat, e.g. “show the distribution of …”.")
        else:
            st.info(
                "No charts in this session yet: ask for one, e.g. “show the distribution of …”."
            )
        return
    if current is None:
        st.caption("Your newest charts across all your analyses; open one to see it in its chat.")
    for viz in charts:
        st.subheader(viz["title"])
        if current is None:
            where = f"In “{titles.get(viz['session_id'], 'an earlier analysis')}”"
            chat = state.page("chat")
            if chat is None:
                st.caption(where)
            else:
                st.page_link(
                    chat, label=where, query_params={"session": viz["session_id"]},
                    icon=":material/chat:",
                )  # fmt: skip
        render.chart(viz["figure"], key=f"gallery-{viz['id']}")
        name = "".join(c if c.isalnum() else "_" for c in viz["title"])[:60] or "chart"
        html, raw = st.columns(2)
        html.download_button(
            "Download HTML", pio.to_html(viz["figure"], include_plotlyjs="cdn"),
            file_name=f"{name}.html", mime="text/html", key=f"html-{viz['id']}",
        )  # fmt: skip
        raw.download_button(
            "Download JSON", json.dumps(viz["figure"]),
            file_name=f"{name}.json", mime="application/json", key=f"json-{viz['id']}",
        )  # fmt: skip
