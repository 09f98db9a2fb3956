"""Datasets: upload, list, preview and profile, privacy, download, rename, delete."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from frontend import state
from frontend.client import APIError, QuarryClient

TYPES = ["csv", "tsv", "txt", "json", "jsonl", "ndjson", "xlsx", "xls", "xlsm", "parquet", "zip"]
WAIT_S = 120


def size(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""


def upload(client: QuarryClient) -> None:
    with st.form("upload", clear_on_submit=True):
        file = st.file_uploader(
            "Upload a dataset", type=TYPES,
            help="CSV, TSV, JSON, JSON Lines, Excel, Parquet, or a ZIP of them.",
        )  # fmt: skip
        name = st.text_input("Name (optional)")
        description = st.text_input("Description (optional)")
        if not st.form_submit_button("Upload and convert", type="primary"):
            return
        if file is None:  # submitted before choosing a file, or before it finished sending
            st.warning("Choose a file first (wait until its name shows), then upload it.")
            return
    with st.status(f"Uploading {file.name}…", expanded=True) as box:
        try:
            created = client.upload(file.name, file.getvalue(), name or None, description)
        except APIError as exc:
            box.update(label="Upload refused", state="error")
            st.error(exc.message)
            return
        box.update(label="Converting and profiling…")
        progress = st.progress(0.0)
        pending = {d["id"]: d for d in created["data"]}
        deadline = time.monotonic() + WAIT_S
        waiting, told = None, False
        failed: list[dict[str, Any]] = []
        while pending and time.monotonic() < deadline:
            for dataset_id in list(pending):
                found = client.dataset(dataset_id)
                waiting = found.get("waiting") if found["status"] == "processing" else waiting
                if waiting and not told:  # said once; it is converted when a worker starts
                    st.warning(waiting, icon=":material/hourglass_empty:")
                    told = True
                if found["status"] != "processing":
                    pending.pop(dataset_id)
                    if found["status"] == "ready":
                        st.write(f"✓ **{found['name']}**: {found['row_count']:,} rows")
                    else:
                        failed.append(found)
            done = len(created["data"]) - len(pending)
            progress.progress(done / len(created["data"]))
            if pending:
                time.sleep(0.3)
        if failed:
            box.update(label="The file could not be converted: see why below", state="error")
        elif pending and waiting:
            box.update(label="Waiting for a worker: it will show as ready here", state="error")
        elif pending:
            box.update(label="Still processing: it will show as ready here", state="running")
        else:
            box.update(label="Upload finished", state="complete")
    for found in failed:  # in plain sight, not inside the box
        st.error(f"**{found['name']}** could not be converted: {found.get('error')}")


def profile(found: dict[str, Any]) -> None:
    columns = (found.get("profile") or {}).get("columns") or []
    if not columns:
        return
    rows = [
        {
            "column": c.get("name"),
            "type": c.get("dtype"),
            "missing": f"{c.get('nulls', 0):,} ({100 * (c.get('null_fraction') or 0):.1f}%)",
            "distinct": c.get("distinct"),
            "min": c.get("min"),
            "max": c.get("max"),
            "mean": c.get("mean"),
            "std": c.get("std"),
        }
        for c in columns
    ]
    frame = pd.DataFrame(rows).dropna(axis=1, how="all").astype(str).replace("None", "")
    st.dataframe(frame, hide_index=True, width="stretch")


def details(client: QuarryClient, found: dict[str, Any]) -> None:
    dataset_id = found["id"]
    st.subheader(found["name"])
    if found.get("description"):
        st.caption(found["description"])
    if found["status"] == "failed":
        st.error(found.get("error") or "This file could not be converted.")
    elif found["status"] == "processing":
        if found.get("waiting"):
            st.warning(found["waiting"], icon=":material/hourglass_empty:")
        else:
            st.info("Still converting and profiling this file.")
        if st.button("Refresh"):
            st.rerun()
        return
    else:
        preview, stats = st.tabs(["Preview", "Profile"])
        with preview:
            try:
                sample = client.preview(dataset_id, 50)
            except APIError as exc:
                st.error(exc.message)
            else:
                names = [c["name"] for c in sample["columns"]]
                st.dataframe(
                    pd.DataFrame(sample["rows"], columns=names),
                    hide_index=True, width="stretch",
                )  # fmt: skip
                st.caption(f"First {len(sample['rows'])} of {sample['total_rows']:,} rows")
        with stats:
            profile(client.dataset(dataset_id))
        # what reading the file found: a title line skipped, dates read, a saved index
        for note in (found.get("profile") or {}).get("notes") or []:
            st.info(note, icon=":material/info:")
    share = st.toggle(
        "The agent may send a few sample rows to the model",
        value=bool(found.get("share_samples", True)),
        key=f"share-{dataset_id}",
        help="Off: the model sees only the schema and statistics, never rows.",
    )
    if share != bool(found.get("share_samples", True)):
        client.update_dataset(dataset_id, share_samples=share)
        st.toast("Saved")
    left, middle, right = st.columns(3)
    with left, st.popover("Rename"):
        new_name = st.text_input("Name", found["name"], key=f"rename-{dataset_id}")
        if st.button("Save", key=f"save-{dataset_id}") and new_name.strip():
            try:
                client.update_dataset(dataset_id, name=new_name.strip())
            except APIError as exc:
                st.error(exc.message)
            else:
                st.rerun()
    if found["status"] == "ready":
        with middle, st.popover("Download"):
            for fmt in ("csv", "parquet"):
                if st.button(f"Prepare {fmt.upper()}", key=f"prep-{fmt}-{dataset_id}"):
                    st.session_state[f"file-{fmt}-{dataset_id}"] = client.download(dataset_id, fmt)
                data = st.session_state.get(f"file-{fmt}-{dataset_id}")
                if data is not None:
                    st.download_button(
                        f"Save {fmt.upper()}", data, file_name=f"{found['name']}.{fmt}",
                        key=f"dl-{fmt}-{dataset_id}",
                    )  # fmt: skip
    with right, st.popover("Delete"):
        st.write(f"Delete **{found['name']}** and its file? Sessions that used it keep a note.")
        if st.button("Delete for good", type="primary", key=f"delete-{dataset_id}"):
            client.delete_dataset(dataset_id)
            st.session_state.pop("dataset", None)
            st.rerun()


def page() -> None:
    st.title("Datasets")
    client = state.client()
    upload(client)
    try:
        found = client.datasets()
    except APIError as exc:
        state.fail(exc)
        return
    if not found:
        st.info("No datasets yet: upload a CSV, Excel, JSON or Parquet file above.")
        return
    rows = [
        {
            "name": d["name"],
            "status": d["status"],
            "rows": d.get("row_count"),
            "columns": d.get("column_count"),
            "size": size(d.get("size_bytes")),
            "uploaded": str(d.get("created_at", ""))[:16].replace("T", " "),
        }
        for d in found
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    names = {d["id"]: d["name"] for d in found}
    chosen = st.selectbox(
        "Open a dataset", list(names), format_func=lambda i: names[i], key="dataset"
    )
    if chosen:
        try:
            details(client, client.dataset(chosen))
        except APIError as exc:
            state.fail(exc)
