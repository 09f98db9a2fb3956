"""The evaluation without the services: each dataset goes through Quarry's own ingest
(`inspect_upload` + `convert_table`, as the worker runs them), each question through the
chat model with the prompt and profiles the worker gives it, each snippet through the real
process sandbox, and the tool result back to the model as the worker words it
(`Execution.summary`). What this leaves out is the API, the database and Celery: `make eval`
(tests/eval/__main__.py) goes through those too.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from api.ingest.convert import convert_table
from api.ingest.sniff import inspect_upload
from api.naming import variable_name
from tests.builders import LIMITS
from tests.eval import datasets
from tests.eval.questions import Case
from worker.agent.offline import OfflineChatModel
from worker.agent.tools import Execution
from worker.sandbox.process import ProcessBackend, ProcessConfig


@dataclass
class Ingested:
    variable: str
    schema: dict[str, Any]
    profile: dict[str, Any]
    arrow: Path


def ingest(name: str, folder: Path) -> Ingested:
    filename, content = datasets.upload(name)
    path = folder / f"upload-{uuid.uuid4().hex[:8]}"
    path.write_bytes(content)
    [table] = inspect_upload(
        path, filename, len(content), hashlib.sha256(content).hexdigest(), LIMITS
    )
    out = convert_table(table, folder / name)
    variable = variable_name(name, {"df"})
    profile = out["profile"]
    schema = {
        "variable": variable,
        "name": name,
        "rows": out["row_count"],
        "columns": {str(c["name"]): c.get("dtype", "?") for c in profile["columns"]},
    }
    return Ingested(variable, schema, profile, folder / name / "data.arrow")


def system_prompt(tables: list[Ingested]) -> str:
    """The schema line as worker/agent/context.py writes it (the offline model reads it)."""
    return "Datasets (JSON):\n" + json.dumps([t.schema for t in tables], default=str)


@dataclass
class Reply:
    text: str
    code: str | None
    messages: list[BaseMessage]


class Direct:
    def __init__(self, sandbox: ProcessBackend, folder: Path, model: BaseChatModel | None = None):
        self.sandbox, self.folder = sandbox, folder
        self.model = model or OfflineChatModel()
        self.tables: dict[str, Ingested] = {}

    def table(self, name: str) -> Ingested:
        if name not in self.tables:
            self.tables[name] = ingest(name, self.folder)
        return self.tables[name]

    def ask(self, name: str, question: str, history: list[BaseMessage] | None = None) -> Reply:
        """`name`: a dataset, or several joined by "+" (a session holding them all)."""
        return self.ask_tables([self.table(n) for n in name.split("+")], question, history)

    def ask_tables(
        self, tables: list[Ingested], question: str, history: list[BaseMessage] | None = None
    ) -> Reply:
        """One question in a session holding `tables` (the first is also `df`)."""
        prompt = SystemMessage(system_prompt(tables))
        messages = [prompt, *(history or []), HumanMessage(question)]
        local = {"local_profiles": {t.variable: t.profile for t in tables}}
        mounted = [{"name": t.variable, "path": str(t.arrow), "format": "arrow"} for t in tables]
        mounted.append({**mounted[0], "name": "df"})
        code = None
        for _ in range(4):
            reply = self.model.invoke(messages, **local)
            assert isinstance(reply, AIMessage)
            messages.append(reply)
            if not reply.tool_calls:
                return Reply(str(reply.content), code, messages[1:])
            for call in reply.tool_calls:
                code = str(call["args"].get("code", ""))
                result = self.sandbox.run({"code": code, "datasets": mounted})
                done = Execution(id=uuid.uuid4(), result=result)
                messages.append(
                    ToolMessage(
                        done.summary(), artifact=done.artifact(), tool_call_id=str(call["id"])
                    )
                )
        return Reply("I could not finish.", code, messages[1:])

    def answer(self, case: Case) -> Reply:
        history: list[BaseMessage] = []
        if case.after:
            history = self.ask(case.dataset, case.after).messages
        return self.ask(case.dataset, case.question, history)


@contextmanager
def direct(uid_base: int = 67000) -> Iterator[Direct]:
    with (
        tempfile.TemporaryDirectory(prefix="quarry-eval-") as folder,
        ProcessBackend(ProcessConfig(warm=True, pool_size=2, uid_base=uid_base)) as sandbox,
    ):
        yield Direct(sandbox, Path(folder))
