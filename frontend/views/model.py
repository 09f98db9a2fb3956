"""Which chat model answers here, and what the offline model understands."""

from __future__ import annotations

import streamlit as st

from frontend import state
from frontend.client import APIError


def page() -> None:
    st.title("The model")
    try:
        info = state.client().model_info()
    except APIError as exc:
        state.fail(exc)
        return
    if info["mode"] == "offline":
        st.info(
            "No LLM is configured, so Quarry's **offline model** answers: it needs no network "
            "and understands common analysis requests, writing real pandas and Plotly code "
            "that runs in the sandbox. For free-form questions, the operator sets "
            "`OPENAI_API_KEY` (and `OPENAI_BASE_URL` for Ollama, vLLM or LM Studio)."
        )
        st.subheader("Questions it answers")
        st.markdown("\n".join(f"- {q}" for q in info["offline_examples"]))
    elif info["mode"] == "openai-compatible":
        st.success(f"Model **{info['model']}** at `{info['endpoint']}`.")
    else:
        st.success(f"A custom chat model: **{info['model']}**.")
    st.caption(
        f"Up to {info['max_tool_calls']} code runs per question."
        + (
            f" Daily budget: {info['daily_token_budget']:,} tokens."
            if info["daily_token_budget"]
            else ""
        )
    )
