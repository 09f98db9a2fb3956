"""The chat: sessions in the sidebar, the conversation with its code, tables and charts, and
a new question's steps streaming live."""

from __future__ import annotations

from typing import Any

import streamlit as st

from frontend import render, state
from frontend.client import APIError, QuarryClient
from frontend.views import datasets

FINISHED = {"succeeded", "failed", "cancelled"}


def sidebar(client: QuarryClient, current: str | None) -> None:
    with st.sidebar:
        st.subheader("Sessions")
        if st.button("New analysis", width="stretch", icon=":material/add:", key="new"):
            new_session_dialog(client)
        try:
            sessions = client.sessions()
        except APIError as exc:
            state.fail(exc)
            return
        if not sessions:
            st.caption("No sessions yet.")
        for found in sessions:
            label = found["title"]
            if st.button(
                label,
                key=f"open-{found['id']}",
                width="stretch",
                type="primary" if found["id"] == current else "secondary",
            ):
                state.open_session(found["id"])
                st.rerun()


@st.dialog("New analysis", width="large")
def new_session_dialog(client: QuarryClient) -> None:
    new_session(client)


def new_session(client: QuarryClient) -> None:
    try:
        ready = [d for d in client.datasets() if d["status"] == "ready"]
    except APIError as exc:
        st.error(exc.message)
        return
    names = {d["id"]: datasets.label(d) for d in ready}
    picked = st.multiselect(
        "Datasets", list(names), format_func=lambda i: names[i], key="new-datasets"
    )
    title = st.text_input("Title (optional)", key="new-title")
    if not ready:
        st.caption("Upload a dataset first (Datasets page).")
    if st.button("Start", type="primary", key="new-start"):
        try:
            created = client.create_session(picked, title.strip() or None)
        except APIError as exc:
            st.error(exc.message)
            return
        state.open_session(created["id"])
        st.rerun()


def header(client: QuarryClient, session: dict[str, Any]) -> None:
    st.title(session["title"])
    names = [
        d["name"] + (" (deleted)" if d.get("status") == "deleted" else "")
        for d in session.get("datasets", [])
    ]
    st.caption("Datasets: " + (", ".join(names) if names else "none"))
    rename, export, delete = st.columns([1, 1, 1])
    with rename, st.popover("Rename"):
        title = st.text_input("Title", session["title"], key="rename-session")
        if st.button("Save", key="rename-save") and title.strip():
            client.update_session(session["id"], title=title.strip())
            st.rerun()
    with export, st.popover("Export notebook"):
        if st.button("Prepare the notebook", key="export-prepare"):
            st.session_state["notebook"] = client.export_notebook(session["id"])
        if st.session_state.get("notebook"):
            st.download_button(
                "Save .ipynb", st.session_state["notebook"],
                file_name=f"{session['title']}.ipynb", mime="application/x-ipynb+json",
            )  # fmt: skip
            st.caption("Put the datasets, downloaded as Parquet, next to it.")
    with delete, st.popover("Delete"):
        st.write("Delete this session with its messages, code runs and charts?")
        if st.button("Delete for good", type="primary", key="delete-session"):
            client.delete_session(session["id"])
            state.open_session(None)
            st.rerun()


def offer(questions: list[str], key: str) -> None:
    """Questions the user can ask with one click (the next run of the page asks it)."""
    columns = st.columns(min(len(questions), 3))
    for i, question in enumerate(questions):
        columns[i % len(columns)].button(
            question,
            key=f"suggest-{key}-{i}",
            icon=":material/chat:",
            on_click=_choose,
            args=(question,),
        )


def _choose(question: str) -> None:
    st.session_state["suggested_question"] = question


def history(client: QuarryClient, session_id: str) -> str | None:
    """The conversation so far; returns the id of a run still in progress, if any. An
    empty conversation offers questions built from the session's datasets."""
    messages = client.messages(session_id)
    if not messages and not st.session_state.get("follow_run"):
        questions = client.suggestions(session_id)
        if questions:
            st.caption("Try one of these, or ask your own question below:")
            offer(questions, "start")
    executions = client.executions(session_id)
    charts: dict[str, list[dict[str, Any]]] = {}
    if executions:
        for viz in reversed(client.visualizations(session_id)):
            charts.setdefault(viz.get("code_execution_id") or "", []).append(viz)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for ex in executions:
        by_run.setdefault(ex.get("run_id") or "", []).append(ex)
    asked = {m["run_id"] for m in messages if m["role"] == "user"}
    timeline: list[tuple[str, str, dict[str, Any]]] = [
        (m["created_at"], "message", m) for m in messages
    ]
    timeline += [
        (ex["created_at"], "direct", ex) for ex in executions if ex.get("run_id") not in asked
    ]
    timeline.sort(key=lambda item: item[0])
    pending: str | None = None
    for _, kind, item in timeline:
        if kind == "direct":
            with st.chat_message("user", avatar=":material/code:"):
                st.caption("Your code")
                render.execution(
                    item, charts.get(item["id"], []), client, session_id, expanded=True
                )
        elif item["role"] == "user":
            with st.chat_message("user"):
                st.markdown(item["content"])
            if item.get("run_id") and not any(
                m["role"] == "assistant" and m.get("run_id") == item["run_id"] for m in messages
            ):
                pending = item["run_id"]
        elif item["role"] == "assistant":
            with st.chat_message("assistant"):
                for ex in by_run.get(item.get("run_id") or "", []):
                    render.execution(ex, charts.get(ex["id"], []), client, session_id)
                st.markdown(item["content"])
                offered = (item.get("payload") or {}).get("suggestions") or []
                if offered and item is messages[-1]:
                    offer(offered, item["id"])
    return pending


def follow(client: QuarryClient, session_id: str, run_id: str, who: str = "assistant") -> None:
    """Stream a run's steps as they happen, with a stop button; then redraw the page."""
    st.button(
        "Stop", key=f"stop-{run_id}", icon=":material/stop_circle:",
        on_click=_cancel, args=(client, run_id),
    )  # fmt: skip
    live = render.LiveTurn(client, session_id)
    with st.chat_message(who):
        try:
            for event in client.events(run_id):
                live.show(event)
        except APIError as exc:
            state.fail(exc)
    st.session_state.pop("follow_run", None)
    if live.status in FINISHED:
        st.rerun()


def _cancel(client: QuarryClient, run_id: str) -> None:
    try:
        client.cancel(run_id)
    except APIError as exc:
        st.session_state["cancel_error"] = exc.message


def ask(client: QuarryClient, session_id: str, question: str) -> None:
    with st.chat_message("user"):
        st.markdown(question)
    try:
        accepted = client.ask(session_id, question)
    except APIError as exc:
        if exc.status == 401:
            st.session_state["pending_question"] = question
        state.fail(exc)
        return
    st.session_state.pop("pending_question", None)
    follow(client, session_id, accepted["run_id"])


def page() -> None:
    client = state.client()
    current = state.session_id()
    sidebar(client, current)
    if current is None:
        st.title("Chat")
        st.info(
            "Start a **new analysis** in the sidebar: pick the datasets to ask about. "
            "Upload files on the **Datasets** page."
        )
        return
    try:
        session = client.session(current)
    except APIError as exc:
        if exc.status == 404:
            state.open_session(None)
            st.warning("That session does not exist (or is not yours).")
            return
        state.fail(exc)
        return
    header(client, session)
    error = st.session_state.pop("cancel_error", None)
    if error:
        st.warning(error)
    try:
        pending = history(client, current)
    except APIError as exc:
        state.fail(exc)
        return
    following = st.session_state.get("follow_run")
    if following:
        follow(client, current, following, who="user")
    elif pending:
        try:
            run = client.run(pending)
        except APIError:
            run = {"status": "failed"}
        if run["status"] not in FINISHED:
            follow(client, current, pending)
        elif run.get("error"):
            with st.chat_message("assistant"):
                st.error(run["error"], icon=":material/error:")
    waiting = st.session_state.get("pending_question")
    question = st.chat_input("Ask about your data…", disabled=session["status"] == "archived")
    if waiting and not question:
        question = waiting
    suggested = st.session_state.pop("suggested_question", None)
    if suggested and not question:
        question = suggested
    if question:
        ask(client, current, question)
