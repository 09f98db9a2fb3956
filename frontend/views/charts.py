"""Every chart of the open session, newest first, downloadable as HTML and JSON."""

from __future__ import annotations

import json

import plotly.io as pio
import streamlit as st

from frontend import render, state
from frontend.client import APIError


def page() -> None:
    st.title("Charts")
    current = state.session_id()
    if current is None:
        st.info("Open a session on the Chat page: its charts appear here.")
        return
    client = state.client()
    try:
        charts = client.visualizations(current)
    except APIError as exc:
        state.fail(exc)
        return
    if not charts:
        st.info("No charts in this session yet: ask for one, e.g. “show the distribution of …”.")
        return
    for viz in charts:
        st.subheader(viz["title"])
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
