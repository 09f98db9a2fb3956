"""Drawing what the agent did: one set of functions for a conversation replayed from the
API and for a turn streaming live, so both look the same."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import streamlit as st

from frontend.client import APIError, QuarryClient

FigureLoader = Callable[[str], dict[str, Any]]


# A wide table in an answer scrolls inside the answer instead of running off the page.
PAGE_STYLE = (
    "<style>[data-testid='stMarkdownContainer'] table "
    "{display: block; max-width: 100%; overflow-x: auto;}</style>"
)


def page_style() -> None:
    st.html(PAGE_STYLE)  # style only: Streamlit adds it without taking any room


def table(found: dict[str, Any]) -> None:
    """A result table: decimals shown rounded (at most three places, thousands grouped) while
    the table's own download keeps every digit; wide tables scroll inside their frame."""
    frame = pd.DataFrame(found.get("rows", []), columns=found.get("columns", []))
    st.dataframe(frame, hide_index=True, width="stretch", column_config=decimal_columns(frame))
    total = found.get("total_rows")
    if total and total > len(frame):
        st.caption(f"{len(frame)} of {total} rows shown")


def decimal_columns(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        str(name): st.column_config.NumberColumn(format="localized")
        for name, dtype in frame.dtypes.items()
        if pd.api.types.is_float_dtype(dtype)
    }


def chart(figure: dict[str, Any], key: str) -> None:
    st.plotly_chart(figure, width="stretch", key=key)


def outputs(result: dict[str, Any], error: dict[str, Any] | None = None) -> None:
    """What a snippet printed and returned: the same for a stored execution and a live
    `result` event."""
    if error:
        line = f" (line {error['line']})" if error.get("line") else ""
        st.error(f"{error.get('type', 'Error')}{line}: {error.get('message', '')}")
    if result.get("stdout"):
        st.code(result["stdout"], language="text")
    tables = result.get("tables") or []
    for found in tables:
        table(found)
    if not tables and result.get("result") not in (None, ""):
        st.code(str(result["result"]), language="text")
    for note in result.get("notes") or []:
        st.caption(note)
    kept = [k.get("name") for k in result.get("workspace") or []]
    if kept:
        st.caption("Kept for the next snippets: " + ", ".join(f"`{k}`" for k in kept))


def step_label(ok: bool | None, duration_ms: int | None = None, stopped: bool = False) -> str:
    if ok is None:
        return "Running code…"
    took = f" ({duration_ms} ms)" if duration_ms else ""
    if stopped:
        return f"Code stopped{took}"
    return f"Code ran{took}" if ok else f"Code failed{took}"


def rerun_editor(client: QuarryClient, session_id: str, code: str, key: str) -> None:
    """ "Edit & re-run": the user's version of a snippet, in a wide editor that stays open
    until the code is sent to the sandbox (its run then streams in the chat) or dismissed."""
    st.button(
        "Edit & re-run", key=f"open-{key}", icon=":material/edit:", type="tertiary",
        on_click=st.session_state.__setitem__, args=("editing", key),
    )  # fmt: skip
    if st.session_state.get("editing") == key:
        _editor(client, session_id, code, key)


def _stop_editing() -> None:
    st.session_state.pop("editing", None)


@st.dialog("Edit & re-run", width="large", on_dismiss=_stop_editing)
def _editor(client: QuarryClient, session_id: str, code: str, key: str) -> None:
    lines = code.count("\n") + 1
    edited = st.text_area(
        "Code", code, height=min(max(lines * 22 + 40, 200), 560), key=f"edit-{key}"
    )
    if st.button("Run in the sandbox", key=f"run-{key}", type="primary"):
        try:
            accepted = client.execute(session_id, edited)
        except APIError as exc:
            st.error(exc.message)
            return
        _stop_editing()
        st.session_state["follow_run"] = accepted["run_id"]
        st.rerun()  # closes the editor; the run streams in the chat


def execution(
    found: dict[str, Any],
    charts: Iterable[dict[str, Any]],
    client: QuarryClient,
    session_id: str,
    *,
    expanded: bool = False,
) -> None:
    """A stored code execution, as a step box with its outputs and charts."""
    ok = found.get("outcome") == "ok"
    label = step_label(ok, found.get("duration_ms"), found.get("outcome") == "cancelled")
    with st.status(label, state="complete" if ok else "error", expanded=expanded):
        st.code(found.get("code", ""), language="python")
        outputs(found.get("result") or {}, None if ok else found.get("error"))
    for viz in charts:  # outside the box: a chart is the point, not a detail
        chart(viz["figure"], key=f"viz-{viz['id']}")
    rerun_editor(client, session_id, found.get("code", ""), key=str(found.get("id")))


class LiveTurn:
    """Draws a run's events as they arrive: each snippet a status box that goes running →
    complete/error, then the answer."""

    def __init__(self, client: QuarryClient, session_id: str) -> None:
        self.client = client
        self.session_id = session_id
        self.box: Any = None
        self.status: str | None = None

    def show(self, event: dict[str, Any]) -> None:
        kind, payload = event["type"], event.get("payload") or {}
        if kind == "status" and payload.get("status") == "queued":
            st.caption("Waiting for a worker…")
        elif kind == "status" and payload.get("restarted"):
            st.info(
                "The worker answering this stopped; another one starts it again. "
                "What the lost attempt showed above is discarded.",
                icon=":material/restart_alt:",
            )
            self.box = None
        elif kind == "notice":
            st.warning(payload.get("message", ""), icon=":material/hourglass_empty:")
        elif kind == "plan":
            st.markdown(payload.get("content", ""))
        elif kind == "code":
            self.box = st.status(step_label(None), state="running", expanded=True)
            with self.box:
                st.code(payload.get("code", ""), language="python")
        elif kind == "result":
            if self.box is None:
                self.box = st.status(step_label(None), state="running", expanded=True)
            ok = bool(payload.get("ok"))
            with self.box:
                outputs(payload, None if ok else payload.get("error"))
            stopped = (payload.get("error") or {}).get("type") == "Cancelled"
            self.box.update(
                label=step_label(ok, payload.get("duration_ms"), stopped),
                state="complete" if ok else "error",
            )
        elif kind == "chart":
            try:
                viz = self.client.visualization(payload["visualization_id"])
            except APIError as exc:
                st.warning(f"The chart could not be loaded: {exc.message}")
                return
            chart(viz["figure"], key=f"live-{viz['id']}")
        elif kind == "answer":
            st.markdown(payload.get("content", ""))
        elif kind == "error":
            st.error(payload.get("message", "The run failed."), icon=":material/error:")
        elif kind == "done":
            self.status = payload.get("status")
            if self.status == "cancelled":
                st.info("Stopped.")
