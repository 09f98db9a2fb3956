"""What the agent knows about a session: its datasets (names the snippets use, schema and
profile from the database: never the data beyond a few sample rows, and those only when
the dataset allows it) and the session workspace. Built fresh for every model call; none of
it is kept in the graph state."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.config import Settings
from api.models import AnalysisSession, Dataset, DatasetStatus, SessionDataset
from api.naming import variable_name
from api.storage import dataset_arrow_file, dataset_file
from worker import workspace

MAX_PROMPT_COLUMNS = 200
# what the model is told of each column ("index": a row number saved with the data)
_DESCRIBED = ("name", "dtype", "kind", "index", "nulls", "distinct", "min", "max", "mean", "std")


@dataclass
class DatasetInfo:
    id: uuid.UUID
    name: str  # as the user named it
    variable: str  # as snippets see it
    path: Path
    format: str
    rows: int | None
    profile: dict[str, Any]
    share_samples: bool

    @property
    def columns(self) -> list[str]:
        return [str(c["name"]) for c in self.profile.get("columns", [])]

    def schema(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "name": self.name,
            "rows": self.rows,
            "columns": {
                str(c["name"]): c.get("dtype", "?")
                for c in self.profile.get("columns", [])[:MAX_PROMPT_COLUMNS]
            },
        }

    def describe(self, sample_rows: int = 5) -> dict[str, Any]:
        """Schema and profile; sample rows only when the dataset allows sending them."""
        columns = []
        for c in self.profile.get("columns", [])[:MAX_PROMPT_COLUMNS]:
            item = {k: c[k] for k in _DESCRIBED if k in c}
            if self.share_samples and c.get("top_values"):
                item["top_values"] = c["top_values"][:5]
            columns.append(item)
        out: dict[str, Any] = {
            "variable": self.variable,
            "name": self.name,
            "rows": self.rows,
            "columns": columns,
        }
        if self.share_samples:
            out["sample_rows"] = self.profile.get("sample_rows", [])[:sample_rows]
        else:
            out["note"] = (
                "The owner does not share sample rows with the model: schema and statistics only."
            )
        return out


@dataclass
class SessionContext:
    session_id: uuid.UUID
    user_id: uuid.UUID
    datasets: list[DatasetInfo] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # attached, but deleted or not ready
    workspace_dir: Path | None = None

    def dataset(self, name: str) -> DatasetInfo | None:
        for d in self.datasets:
            if name in (d.variable, d.name) or (name == "df" and d is self.datasets[0]):
                return d
        return None

    def job_datasets(self) -> list[dict[str, Any]]:
        found = []
        for i, d in enumerate(self.datasets):
            entry = {"path": str(d.path), "format": d.format}
            found.append({"name": d.variable, **entry})
            if i == 0 and d.variable != "df":
                found.append({"name": "df", **entry})
        return found

    def frame_columns(self) -> dict[str, list[str]]:
        """Variable -> columns, for checking a snippet's column references."""
        found = {d.variable: d.columns for d in self.datasets}
        if self.datasets:
            found.setdefault("df", self.datasets[0].columns)
        return found

    def workspace_lines(self) -> list[str]:
        return workspace.describe(self.workspace_dir) if self.workspace_dir else []

    def system_prompt(self) -> str:
        schemas = [d.schema() for d in self.datasets]
        lines = [
            "You are Quarry, a careful data analyst. Answer the user's questions about their "
            "datasets by writing Python and running it with the `run_python` tool; never "
            "invent numbers: every figure you state must come from a tool result.",
            "",
            "How snippets run: each `run_python` call is a fresh, network-less sandbox with "
            "pandas as pd, numpy as np, plotly.express as px, plotly.graph_objects as go, "
            "scipy, scikit-learn, math, statistics, datetime, json, re, collections, "
            "itertools, functools. Import what you use. No files, no network, no "
            "subprocesses: the datasets are already loaded as DataFrames under the variable "
            "names below (the first one is also `df`). The value of the last expression is "
            "shown; DataFrames shown become tables; every Plotly figure you create becomes "
            "a chart (do not call fig.show() or write files). DataFrames and plain values you "
            "leave at top level are kept for later snippets of this session.",
            "",
            "Datasets (JSON; use describe_dataset for statistics and sample rows):",
            json.dumps(schemas, default=str),
        ]
        if self.missing:
            lines += ["", "No longer available: " + ", ".join(self.missing)]
        kept = self.workspace_lines()
        if kept:
            lines += ["", "Kept from earlier snippets (available by name):", *kept]
        lines += [
            "",
            "Keep answers short and concrete; mention the numbers and what a chart shows.",
        ]
        return "\n".join(lines)


def load(
    db: Session, settings: Settings, session_id: uuid.UUID, user_id: uuid.UUID
) -> SessionContext:
    session = db.scalar(
        select(AnalysisSession).where(
            AnalysisSession.id == session_id, AnalysisSession.user_id == user_id
        )
    )
    ctx = SessionContext(session_id=session_id, user_id=user_id)
    if session is None:
        return ctx
    ctx.workspace_dir = workspace.folder(settings.data_dir, user_id, session_id)
    links = db.scalars(
        select(SessionDataset)
        .where(SessionDataset.session_id == session_id, SessionDataset.user_id == user_id)
        .order_by(SessionDataset.added_at)
    ).all()
    taken: set[str] = {"df"}
    for link in links:
        dataset: Dataset | None = link.dataset
        if dataset is None or dataset.status != DatasetStatus.READY or dataset.user_id != user_id:
            ctx.missing.append(link.dataset_name)
            continue
        arrow = dataset_arrow_file(settings.data_dir, user_id, dataset.id)
        path, fmt = (
            (arrow, "arrow")
            if arrow.is_file()
            else (dataset_file(settings.data_dir, user_id, dataset.id), "parquet")
        )
        variable = variable_name(dataset.name, taken)
        taken.add(variable)
        ctx.datasets.append(
            DatasetInfo(
                id=dataset.id,
                name=dataset.name,
                variable=variable,
                path=path.resolve(),
                format=fmt,
                rows=dataset.row_count,
                profile=dataset.profile or {},
                share_samples=dataset.share_samples,
            )
        )
    return ctx
