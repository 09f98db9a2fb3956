"""Datasets: upload, list, preview and profile, privacy, download, rename, delete."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pandas as pd
import streamlit as st

from frontend import render, state
from frontend.client import APIError, QuarryClient

WAIT_S = 120


def size(n: int | None) -> str:
    if not n:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""


def label(found: dict[str, Any]) -> str:
    """How a dataset is named in every list and picker: two files called `sales` differ
    by their size and upload time."""
    when = str(found.get("created_at", ""))[:16].replace("T", " ")
    if found.get("status") == "ready":
        shape = f"{found.get('row_count') or 0:,} rows × {found.get('column_count') or 0} columns"  # noqa: RUF001
    else:
        shape = str(found.get("status", ""))
    return f"{found['name']} · {shape} · {when}"


def formats(client: QuarryClient) -> list[str] | None:
    """What the API accepts (asked once per tab); None: any file, the API says if not."""
    if "upload_formats" not in st.session_state:
        try:
            st.session_state["upload_formats"] = client.upload_formats()
        except APIError:
            return None
    found: list[str] = st.session_state["upload_formats"]
    return found


def upload(client: QuarryClient) -> None:
    with st.form("upload", clear_on_submit=True):
        file = st.file_uploader(
            "Upload a dataset", type=formats(client),
            help="CSV, TSV, JSON, JSON Lines, Excel, Parquet, or a ZIP of them.",
        )  # fmt: skip
        name = st.text_input("Name (optional)")
        description = st.text_input("Description (optional)")
        if st.form_submit_button("Upload and convert", type="primary"):
            if file is None:  # submitted before choosing a file, or before it was sent
                st.warning("Choose a file first (wait until its name shows), then upload it.")
                return
            content = file.getvalue()
            st.session_state["pending_upload"] = {
                "filename": file.name, "content": content, "name": name or None,
                "description": description, "sha256": hashlib.sha256(content).hexdigest(),
            }  # fmt: skip
    pending = st.session_state.get("pending_upload")
    if pending is None or not _new_or_wanted(client, pending):
        return
    del st.session_state["pending_upload"]
    _send(client, pending)


def _new_or_wanted(client: QuarryClient, pending: dict[str, Any]) -> bool:
    """A file whose bytes are already one of the user's datasets: say so, and offer to use
    that one (the default) or upload it again."""
    if pending.get("again"):
        return True
    try:
        same = [
            d
            for d in client.datasets()
            if d.get("sha256") == pending["sha256"] and d["status"] != "failed"
        ]
    except APIError:
        return True  # the upload itself will say what is wrong
    if not same:
        return True
    st.warning(
        f"**{pending['filename']}** is already uploaded, byte for byte: "
        + "; ".join(f"**{label(d)}**" for d in same[:3])
        + ". Use it, or upload the file again as a new dataset.",
        icon=":material/content_copy:",
    )
    use, again, cancel = st.columns(3)
    if use.button("Use the existing dataset", type="primary", key="duplicate-use"):
        del st.session_state["pending_upload"]
        st.session_state["dataset"] = same[0]["id"]
        st.rerun()
    if again.button("Upload it again", key="duplicate-again"):
        pending["again"] = True
        st.rerun()
    if cancel.button("Cancel", key="duplicate-cancel"):
        del st.session_state["pending_upload"]
        st.rerun()
    return False


def _send(client: QuarryClient, pending: dict[str, Any]) -> None:
    with st.status(f"Uploading {pending['filename']}…", expanded=True) as box:
        try:
            created = client.upload(
                pending["filename"], pending["content"], pending["name"], pending["description"]
            )
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


def type_words(column: dict[str, Any]) -> str:
    """A column's type as a person says it, not Arrow's name for it (`large_string`)."""
    dtype = str(column.get("dtype") or "").lower()
    if column.get("index"):
        return "row number (saved index)"
    if "bool" in dtype:
        return "yes/no"
    if dtype.startswith("timestamp") or "datetime" in dtype:
        ends = [str(column.get(k) or "") for k in ("min", "max")]
        timed = any(len(e) > 10 and e[11:19].strip("0:") for e in ends)
        return "date and time" if timed else "date"
    if dtype.startswith("date"):
        return "date"
    if dtype.startswith("duration") or "timedelta" in dtype:
        return "duration"
    if "int" in dtype:
        return "whole number"
    if any(t in dtype for t in ("float", "double", "decimal")):
        return "decimal number"
    if "string" in dtype or dtype in ("str", "object", "utf8"):
        return "text"
    if "dictionary" in dtype or "category" in dtype:
        return "category"
    if "list" in dtype or "struct" in dtype:
        return "nested values"
    return dtype or "unknown"


def profile(found: dict[str, Any]) -> None:
    columns = (found.get("profile") or {}).get("columns") or []
    if not columns:
        return
    rows = [
        {
            "column": c.get("name"),
            "type": type_words(c),
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
                rows = pd.DataFrame(sample["rows"], columns=names)
                st.dataframe(
                    rows, hide_index=True, width="stretch",
                    column_config=render.decimal_columns(rows),
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
    names = {d["id"]: label(d) for d in found}
    if st.session_state.get("dataset") not in names:
        st.session_state.pop("dataset", None)  # deleted meanwhile
    chosen = st.selectbox(
        "Open a dataset", list(names), format_func=lambda i: names[i], key="dataset"
    )
    if chosen:
        try:
            details(client, client.dataset(chosen))
        except APIError as exc:
            state.fail(exc)
