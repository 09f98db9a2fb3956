"""The agent's tools: list the session's datasets, describe one, run Python in the sandbox.

Tables, figures and workspace data never enter the graph state: a run's outputs are stored
(CodeExecution, Visualization rows, workspace files) and streamed as run events; the model
gets a short text summary of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.models import CodeExecution, Visualization
from worker import metrics, runs, workspace
from worker.agent import columns as column_check
from worker.agent.context import SessionContext
from worker.sandbox import Backend, SandboxUnavailable, default_limits
from worker.sandbox.base import failure

SUMMARY_TEXT = 1500  # characters of stdout / result the model sees
SUMMARY_ROWS = 15


def title_of(figure: dict[str, Any], fallback: str) -> str:
    title = (figure.get("layout") or {}).get("title")
    if isinstance(title, dict):
        title = title.get("text")
    return str(title)[:300] if title else fallback


def outcome_of(result: dict[str, Any]) -> str:
    if result.get("ok"):
        return "ok"
    kind = (result.get("error") or {}).get("type")
    return {"TimeoutError": "timeout", "Cancelled": "cancelled", "MemoryError": "memory"}.get(
        kind or "", "error"
    )


def table_text(table: dict[str, Any], rows: int = SUMMARY_ROWS) -> str:
    columns = table.get("columns", [])
    lines = [
        f"table {table.get('name')} ({table.get('total_rows', '?')} rows):",
        " | ".join(map(str, columns)),
    ]
    for row in table.get("rows", [])[:rows]:
        lines.append(" | ".join("" if v is None else str(v) for v in row))
    if table.get("total_rows", 0) > rows:
        lines.append(f"... ({table['total_rows'] - rows} more rows)")
    return "\n".join(lines)


@dataclass
class Execution:
    """One sandbox run as stored: what the events and the summary are made of."""

    id: uuid.UUID
    result: dict[str, Any]
    charts: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    def artifact(self) -> dict[str, Any]:
        """The summary as data (a ToolMessage's `artifact`): what code reading the result
        (the offline model) takes, never re-parsed from the text. As small as the text."""
        r = self.result
        return {
            "ok": self.ok,
            "error": r.get("error"),
            "stdout": (r.get("stdout") or "")[:SUMMARY_TEXT],
            "result": None if r.get("result") is None else str(r["result"])[:SUMMARY_TEXT],
            "tables": [
                {
                    "name": t.get("name"),
                    "columns": t.get("columns", []),
                    "rows": t.get("rows", [])[:SUMMARY_ROWS],
                    "total_rows": t.get("total_rows", 0),
                }
                for t in r.get("tables", [])[:3]
            ],
            "charts": [chart["title"] for chart in self.charts],
        }

    def summary(self) -> str:
        r = self.result
        parts: list[str] = []
        if r.get("ok"):
            parts.append("The snippet ran successfully.")
        else:
            error = r.get("error") or {}
            line = f" (line {error['line']})" if error.get("line") else ""
            parts.append(f"Error{line}: {error.get('type', 'Error')}: {error.get('message', '')}")
        if r.get("stdout"):
            parts.append("printed:\n" + r["stdout"][:SUMMARY_TEXT])
        if r.get("result") is not None and not r.get("tables"):
            parts.append("result: " + str(r["result"])[:SUMMARY_TEXT])
        for table in r.get("tables", [])[:3]:
            parts.append(table_text(table))
        for chart in self.charts:
            parts.append(f"chart created: {chart['title']}")
        if self.kept:
            parts.append("kept for later snippets: " + ", ".join(k["name"] for k in self.kept))
        for note in r.get("notes", []):
            parts.append("note: " + note)
        return "\n".join(parts)


@dataclass(frozen=True)
class ToolAnswer:
    """A tool's answer: the text the model reads, whether the call failed, and the same
    result as data (`ToolMessage.artifact`) where there is one."""

    text: str
    failed: bool = False
    artifact: dict[str, Any] | None = None


class Tools:
    """Runs the model's tool calls for one turn (or one direct execution)."""

    def __init__(
        self,
        *,
        settings: Settings,
        factory: sessionmaker[Session],
        context: SessionContext,
        backend: Callable[[], Backend],
        run_id: uuid.UUID | None,
        emit: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.context = context
        self.backend = backend
        self.run_id = run_id
        self.emit = emit
        self.executions: list[Execution] = []

    def call(self, name: str, args: dict[str, Any], call_id: str | None = None) -> ToolAnswer:
        tool = _BY_NAME.get(name)
        if tool is None:
            return ToolAnswer(f"Unknown tool {name!r}: use {', '.join(_BY_NAME)}.", failed=True)
        return tool.handler(self, args, call_id)

    def _list_datasets(self, _args: dict[str, Any], _call_id: str | None) -> ToolAnswer:
        return ToolAnswer(self.list_datasets())

    def _describe_dataset(self, args: dict[str, Any], _call_id: str | None) -> ToolAnswer:
        text, failed = self.describe_dataset(str(args.get("name", "")))
        return ToolAnswer(text, failed)

    def _run_python(self, args: dict[str, Any], call_id: str | None) -> ToolAnswer:
        code = args.get("code")
        if not isinstance(code, str) or not code.strip():
            return ToolAnswer("run_python needs a non-empty `code` string.", failed=True)
        outcome = self.run_python(code, call_id)
        if isinstance(outcome, str):  # refused before running
            return ToolAnswer(outcome, failed=True)
        return ToolAnswer(outcome.summary(), not outcome.ok, outcome.artifact())

    def list_datasets(self) -> str:
        if not self.context.datasets:
            return "This session has no datasets: ask the user to attach one."
        lines = []
        for i, d in enumerate(self.context.datasets):
            alias = " (also df)" if i == 0 and d.variable != "df" else ""
            names = ", ".join(d.columns[:60])
            lines.append(f"{d.variable}{alias}: {d.name!r}, {d.rows} rows, columns: {names}")
        if self.context.missing:
            lines.append("No longer available: " + ", ".join(self.context.missing))
        return "\n".join(lines)

    def describe_dataset(self, name: str) -> tuple[str, bool]:
        found = self.context.dataset(name)
        if found is None:
            names = ", ".join(d.variable for d in self.context.datasets) or "none"
            return f"No dataset {name!r} in this session (datasets: {names}).", True
        return json.dumps(found.describe(), default=str), False

    def run_python(
        self, code: str, call_id: str | None = None, *, check_columns: bool = True
    ) -> Execution | str:
        """The stored execution, or why the snippet was not run."""
        self.emit("code", {"code": code, "tool_call_id": call_id})
        frames = self.context.frame_columns()
        if check_columns:
            problems = column_check.check(code, frames)
            if problems:
                text = column_check.message(problems, frames)
                self.emit(
                    "result",
                    {
                        "ok": False,
                        "tool_call_id": call_id,
                        "error": {"type": "ColumnError", "message": text, "line": None},
                        "problems": problems,
                    },
                )
                return text
        base = self.context.workspace_dir
        job = {
            "code": code,
            "datasets": self.context.job_datasets(),
            "workspace": workspace.job_entries(base) if base else [],
            "limits": default_limits(self.settings),
        }
        try:
            result = self.backend().run(job)
        except SandboxUnavailable as exc:
            result = failure("SandboxUnavailable", f"The sandbox is not available: {exc}")
        return self._store(code, result, call_id)

    def _store(self, code: str, result: dict[str, Any], call_id: str | None) -> Execution:
        ctx = self.context
        figures = result.pop("figures", None) or []
        entries = result.pop("workspace", None) or []
        kept: list[dict[str, Any]] = []
        if entries and ctx.workspace_dir is not None and result.get("ok"):
            kept = workspace.store(ctx.workspace_dir, entries, sequence=len(self.executions) + 1)
        stored = {k: result.get(k) for k in ("stdout", "result", "tables", "notes")}
        stored["workspace"] = [{k: v for k, v in e.items() if k != "preview"} for e in kept]
        size = len(json.dumps(stored, default=str))
        backend = self.settings.sandbox_backend
        metrics.SANDBOX_RUNS.labels(backend, outcome_of(result)).inc()
        metrics.SANDBOX_SECONDS.labels(backend).observe((result.get("duration_ms") or 0) / 1000)

        def write() -> tuple[CodeExecution, list[dict[str, str]]]:
            with self.factory() as db:
                return self._rows(db, code, result, stored, figures, size)

        # (through a database restart: the snippet ran; running it again would cost more)
        row, charts = runs.retrying(write, "storing a code execution")
        execution = Execution(id=row.id, result=result, charts=charts, kept=kept)
        self.executions.append(execution)
        self.emit(
            "result",
            {
                "execution_id": str(execution.id),
                "tool_call_id": call_id,
                "ok": execution.ok,
                "error": result.get("error"),
                "stdout": result.get("stdout", ""),
                "result": result.get("result"),
                "tables": result.get("tables", []),
                "notes": result.get("notes", []),
                "workspace": stored["workspace"],
                "duration_ms": result.get("duration_ms", 0),
            },
        )
        for made in charts:
            self.emit("chart", {**made, "execution_id": str(execution.id)})
        return execution

    def _rows(
        self,
        db: Session,
        code: str,
        result: dict[str, Any],
        stored: dict[str, Any],
        figures: list[dict[str, Any]],
        size: int,
    ) -> tuple[CodeExecution, list[dict[str, str]]]:
        """The execution and its charts, in one transaction."""
        ctx = self.context
        row = CodeExecution(
            user_id=ctx.user_id,
            session_id=ctx.session_id,
            run_id=self.run_id,
            code=code,
            backend=self.settings.sandbox_backend,
            outcome=outcome_of(result),
            error=result.get("error"),
            result=stored,
            duration_ms=int(result.get("duration_ms") or 0),
            output_bytes=size,
        )
        db.add(row)
        db.flush()
        charts = []
        for i, figure in enumerate(figures, start=1):
            chart = Visualization(
                user_id=ctx.user_id,
                session_id=ctx.session_id,
                run_id=self.run_id,
                code_execution_id=row.id,
                title=title_of(figure, f"Chart {i}"),
                figure=figure,
            )
            db.add(chart)
            db.flush()
            charts.append({"visualization_id": str(chart.id), "title": chart.title})
        db.commit()
        return row, charts


@dataclass(frozen=True)
class Tool:
    """One tool the model may call: its schema (what the model is told) and its handler."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Callable[[Tools, dict[str, Any], str | None], ToolAnswer]

    def spec(self) -> dict[str, Any]:
        """The OpenAI function-calling form `bind_tools` takes."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def _object(**properties: str) -> dict[str, Any]:
    """A JSON schema object of required string properties (name -> description)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {k: {"type": "string", "description": v} for k, v in properties.items()},
    }
    if properties:
        schema["required"] = list(properties)
    return schema


# The agent's tools, in one table: the specs the model is given and the dispatch of its calls.
TOOLS: tuple[Tool, ...] = (
    Tool(
        "list_datasets",
        "The session's datasets: variable name, rows and columns.",
        _object(),
        Tools._list_datasets,
    ),
    Tool(
        "describe_dataset",
        "Schema and statistics of one dataset (and a few sample rows when its owner allows): "
        "call it before analysing an unfamiliar dataset.",
        _object(name="variable name"),
        Tools._describe_dataset,
    ),
    Tool(
        "run_python",
        "Run a Python snippet in a fresh sandbox with the datasets loaded as DataFrames. "
        "Returns printed output, the last expression, tables, and the charts created. "
        "Plotly figures become charts.",
        _object(code="Python source"),
        Tools._run_python,
    ),
)
_BY_NAME: dict[str, Tool] = {tool.name: tool for tool in TOOLS}
TOOL_SPECS: list[dict[str, Any]] = [tool.spec() for tool in TOOLS]
