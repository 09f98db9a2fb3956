"""A session as a Jupyter notebook (nbformat 4) that runs outside Quarry.

The first cells say where the data comes from and load every dataset under the variable
name the sandbox gave it; then, in the order they happened, questions and answers become
markdown and each snippet that ran becomes a code cell carrying its stored outputs (printed
text, the last value, tables, Plotly charts). Snippets that failed are kept as markdown, so
that "Run all" goes from top to bottom.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nbformat
from nbformat import v4
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import utcnow
from api.models import (
    AnalysisSession,
    CodeExecution,
    DatasetStatus,
    Message,
    MessageRole,
    Visualization,
)
from api.naming import file_name, variable_name

TABLE_ROWS = 50  # rows of a stored table shown in a cell's output


@dataclass
class _Source:
    variable: str
    file: str
    name: str
    dataset_id: str


def _sources(session: AnalysisSession) -> tuple[list[_Source], list[str]]:
    """The datasets as the sandbox names them (same order and rules as the worker)."""
    taken: set[str] = {"df"}
    files: set[str] = set()
    found: list[_Source] = []
    missing: list[str] = []
    for link in session.dataset_links:
        dataset = link.dataset
        if dataset is None or dataset.status != DatasetStatus.READY:
            missing.append(link.dataset_name)
            continue
        variable = variable_name(dataset.name, taken)
        taken.add(variable)
        file = file_name(dataset.name, "parquet")
        if file in files:
            file = f"{variable}.parquet"
        files.add(file)
        found.append(_Source(variable, file, dataset.name, str(dataset.id)))
    return found, missing


def _intro(session: AnalysisSession, sources: list[_Source], missing: list[str]) -> list[Any]:
    lines = [
        f"# {session.title}",
        "",
        f"Exported from Quarry on {utcnow():%Y-%m-%d %H:%M} UTC. Questions and answers are "
        "markdown; every snippet that ran is a code cell with the output it had in Quarry.",
    ]
    if sources:
        lines += [
            "",
            "Put the datasets, downloaded as Parquet, next to this notebook (or set `DATA_DIR`):",
            "",
            "| variable | file | dataset | download |",
            "|---|---|---|---|",
        ]
        for s in sources:
            url = f"/api/datasets/{s.dataset_id}/download?format=parquet"
            lines.append(f"| `{s.variable}` | `{s.file}` | {_cell(s.name)} | `GET {url}` |")
    if missing:
        lines += [
            "",
            "No longer available (cells that use them will fail): "
            + ", ".join(_cell(m) for m in missing),
        ]
    cells = [v4.new_markdown_cell("\n".join(lines))]
    if sources:
        code = [
            "from pathlib import Path",
            "",
            "import pandas as pd",
            "",
            'DATA_DIR = Path(".")',
        ]
        for s in sources:
            code.append(f"{s.variable} = pd.read_parquet(DATA_DIR / {s.file!r})")
        if sources[0].variable != "df":
            code.append(f"df = {sources[0].variable}.copy()  # the first dataset is also `df`")
        cells.append(v4.new_code_cell("\n".join(code)))
    return cells


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _escape(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _html_table(table: dict[str, Any]) -> str:
    columns = [html.escape(str(c)) for c in table.get("columns", [])]
    rows = table.get("rows", [])[:TABLE_ROWS]
    head = "".join(f"<th>{c}</th>" for c in columns)
    cells = (("".join(f"<td>{_escape(v)}</td>" for v in r)) for r in rows)
    body = "".join(f"<tr>{c}</tr>" for c in cells)
    total = table.get("total_rows", len(rows))
    more = f"<p>{total} rows, {len(rows)} shown</p>" if total > len(rows) else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _text_table(table: dict[str, Any]) -> str:
    lines = ["\t".join(map(str, table.get("columns", [])))]
    for row in table.get("rows", [])[:TABLE_ROWS]:
        lines.append("\t".join("" if v is None else str(v) for v in row))
    return "\n".join(lines)


def _outputs(execution: CodeExecution, charts: list[Visualization], count: int) -> list[Any]:
    stored = execution.result or {}
    outputs: list[Any] = []
    if stored.get("stdout"):
        outputs.append(v4.new_output("stream", name="stdout", text=stored["stdout"]))
    tables = stored.get("tables") or []
    for table in tables:
        outputs.append(
            v4.new_output(
                "display_data",
                data={"text/html": _html_table(table), "text/plain": _text_table(table)},
            )
        )
    if not tables and stored.get("result") is not None:
        outputs.append(
            v4.new_output(
                "execute_result", data={"text/plain": str(stored["result"])}, execution_count=count
            )
        )
    for chart in charts:
        outputs.append(
            v4.new_output(
                "display_data",
                data={"application/vnd.plotly.v1+json": chart.figure, "text/plain": chart.title},
            )
        )
    return outputs


def _failed(execution: CodeExecution) -> Any:
    error = execution.error or {}
    what = f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    line = f" (line {error['line']})" if error.get("line") else ""
    return v4.new_markdown_cell(
        f"*This snippet did not run to the end{line} — {what}*\n\n```python\n{execution.code}\n```"
    )


def export(db: Session, session: AnalysisSession) -> bytes:
    user_id = session.user_id
    messages = db.scalars(
        select(Message)
        .where(Message.session_id == session.id, Message.user_id == user_id)
        .order_by(Message.created_at, Message.id)
    ).all()
    executions = db.scalars(
        select(CodeExecution)
        .where(CodeExecution.session_id == session.id, CodeExecution.user_id == user_id)
        .order_by(CodeExecution.created_at, CodeExecution.id)
    ).all()
    charts: dict[Any, list[Visualization]] = {}
    for chart in db.scalars(
        select(Visualization)
        .where(Visualization.session_id == session.id, Visualization.user_id == user_id)
        .order_by(Visualization.created_at, Visualization.id)
    ):
        charts.setdefault(chart.code_execution_id, []).append(chart)

    timeline: list[tuple[datetime, int, Message | CodeExecution]] = [
        (m.created_at, 0, m) for m in messages if m.role != MessageRole.SYSTEM
    ]
    timeline += [(e.created_at, 1, e) for e in executions]
    timeline.sort(key=lambda item: (item[0], item[1]))

    sources, missing = _sources(session)
    cells = _intro(session, sources, missing)
    count = 0
    for _, _, item in timeline:
        if isinstance(item, Message):
            if item.role == MessageRole.USER:
                quoted = "\n".join("> " + line for line in item.content.splitlines())
                cells.append(v4.new_markdown_cell(f"**Question**\n\n{quoted}"))
            else:
                cells.append(v4.new_markdown_cell(item.content))
        elif item.outcome == "ok":
            count += 1
            cell = v4.new_code_cell(item.code, execution_count=count)
            cell.outputs = _outputs(item, charts.get(item.id, []), count)
            cells.append(cell)
        else:
            cells.append(_failed(item))

    book = v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "quarry": {"session_id": str(session.id), "exported_at": utcnow().isoformat()},
        },
    )
    nbformat.validate(book)
    return json.dumps(book, ensure_ascii=False, separators=(",", ":")).encode()
