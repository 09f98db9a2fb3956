"""Direct executions (the user's own code, no LLM) and the notebook export.

Runs are carried out in this process by `worker.turn.run_execution` / `run_turn` with their
own WorkerContext — the code a Celery worker runs — against the real PostgreSQL and the real
process sandbox; the agent turns use the offline model, or a FAKE recording chat model
where the test must see what the model was sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest
from langchain_core.messages import AIMessage, BaseMessage
from prometheus_client import REGISTRY

from api.config import Settings
from api.storage import workspace_dir
from tests.agent_models import ScriptedModel
from tests.factories import Client, User
from worker.context import WorkerContext
from worker.turn import run_execution, run_turn


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerContext]:
    ctx = WorkerContext(settings.model_copy(update={"sandbox_uid_base": 62100}))
    yield ctx
    ctx.close()


def _events(client: Client, user: User, run_id: str) -> list[dict[str, Any]]:
    stream = client.get(f"/api/runs/{run_id}/events?follow=false", headers=user.headers).text
    return [json.loads(line[5:]) for line in stream.splitlines() if line.startswith("data:")]


def _execute(
    client: Client, worker: WorkerContext, user: User, session_id: str, code: str
) -> tuple[str, list[dict[str, Any]]]:
    response = client.post(
        f"/api/sessions/{session_id}/executions", headers=user.headers, json={"code": code}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["run"]["kind"] == "execution"
    assert body["run"]["status"] == "queued"
    status = run_execution(uuid.UUID(body["run_id"]), worker)
    assert run_execution(uuid.UUID(body["run_id"]), worker) == "skipped"  # redelivered
    return status, _events(client, user, body["run_id"])


def _ask(client: Client, worker: WorkerContext, user: User, session_id: str, q: str) -> str:
    response = client.post(
        f"/api/sessions/{session_id}/messages", headers=user.headers, json={"content": q}
    )
    assert response.status_code == 202, response.text
    assert run_turn(uuid.UUID(response.json()["run_id"]), worker) == "succeeded"
    return response.json()["run_id"]  # type: ignore[no-any-return]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


CHART_CODE = """\
import plotly.express as px
by_education = df.groupby("education", as_index=False)["income"].mean()
print("groups:", len(by_education))
fig = px.bar(by_education, x="education", y="income", title="Income by education")
by_education
"""


def test_a_direct_execution_streams_stores_and_keeps_its_variables(
    client: Client, worker: WorkerContext
) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    session_id = client.session(user, [dataset["id"]])["id"]
    before = _sample("quarry_worker_runs_total", kind="execution", outcome="succeeded")
    sandbox_before = _sample(
        "quarry_worker_sandbox_executions_total", backend="process", outcome="ok"
    )

    status, events = _execute(client, worker, user, session_id, CHART_CODE)
    assert status == "succeeded"
    # the worker's metrics count it (the default registry, in this process)
    assert _sample("quarry_worker_runs_total", kind="execution", outcome="succeeded") == before + 1
    assert (
        _sample("quarry_worker_sandbox_executions_total", backend="process", outcome="ok")
        == sandbox_before + 1
    )
    assert [e["type"] for e in events] == ["status", "code", "result", "chart", "done"]
    result = events[2]["payload"]
    assert result["ok"]
    assert result["stdout"] == "groups: 4\n"
    assert result["tables"][0]["columns"] == ["education", "income"]
    assert "by_education" in [k["name"] for k in result["workspace"]]
    assert events[3]["payload"]["title"] == "Income by education"
    assert events[-1]["payload"]["status"] == "succeeded"

    listed = client.get(f"/api/sessions/{session_id}/executions", headers=user.headers).json()
    assert listed["count"] == 1
    [stored] = listed["data"]
    assert stored["outcome"] == "ok"
    assert stored["code"] == CHART_CODE
    assert stored["id"] == result["execution_id"]
    charts = client.get(f"/api/sessions/{session_id}/visualizations", headers=user.headers)
    assert charts.json()["data"][0]["code_execution_id"] == stored["id"]

    # the variable it left behind is there for the next snippet
    status, events = _execute(
        client, worker, user, session_id, "int(by_education['income'].count())"
    )
    assert status == "succeeded"
    assert next(e for e in events if e["type"] == "result")["payload"]["result"] == "4"

    # deleting the session deletes what its snippets kept
    kept = workspace_dir(worker.settings.data_dir, uuid.UUID(user.id), uuid.UUID(session_id))
    assert any(kept.iterdir())
    assert client.delete(f"/api/sessions/{session_id}", headers=user.headers).status_code == 204
    assert not kept.exists()


def test_failing_code_fails_the_run_with_the_error(client: Client, worker: WorkerContext) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    session_id = client.session(user, [dataset["id"]])["id"]

    status, events = _execute(client, worker, user, session_id, "df['salary'].mean()")
    assert status == "failed"
    kinds = [e["type"] for e in events]
    assert kinds == ["status", "code", "result", "error", "done"]
    assert "KeyError" in events[3]["payload"]["message"]
    listed = client.get(f"/api/sessions/{session_id}/executions", headers=user.headers).json()
    assert listed["data"][0]["outcome"] == "error"
    run = client.get(f"/api/runs/{listed['data'][0]['run_id']}", headers=user.headers).json()
    assert run["status"] == "failed"
    assert "salary" in run["error"]

    status, events = _execute(client, worker, user, session_id, "open('/etc/passwd').read()")
    assert status == "failed"
    assert "open" in events[3]["payload"]["message"]


def test_bad_requests_get_clear_errors(client: Client) -> None:
    user = client.user()
    session_id = client.session(user)["id"]
    url = f"/api/sessions/{session_id}/executions"
    assert client.post(url, headers=user.headers, json={"code": ""}).status_code == 422
    too_long = client.post(url, headers=user.headers, json={"code": "x" * 100_001})
    assert too_long.status_code == 422
    assert client.post(url, headers=user.headers, json={}).status_code == 422

    first = client.post(url, headers=user.headers, json={"code": "1 + 1"})
    assert first.status_code == 202
    busy = client.post(url, headers=user.headers, json={"code": "2 + 2"})
    assert busy.status_code == 429
    assert busy.headers["Retry-After"]
    client.post(f"/api/runs/{first.json()['run_id']}/cancel", headers=user.headers)

    client.patch(f"/api/sessions/{session_id}", headers=user.headers, json={"status": "archived"})
    archived = client.post(url, headers=user.headers, json={"code": "1 + 1"})
    assert archived.status_code == 409
    assert "archived" in archived.json()["error"]["message"]


SEEN: list[list[BaseMessage]] = []


class RecordingModel(ScriptedModel):
    """A FAKE chat model that keeps what it was sent (in SEEN) and answers at once."""

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        SEEN.append(list(messages))
        return AIMessage(content="Noted.")


def test_the_next_question_tells_the_model_what_the_user_ran(
    client: Client, worker: WorkerContext
) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    session_id = client.session(user, [dataset["id"]])["id"]
    worker._model = RecordingModel()
    SEEN.clear()

    _execute(client, worker, user, session_id, "print('median', df['age'].median())")
    _ask(client, worker, user, session_id, "explain this result")
    sent = "\n".join(str(m.content) for m in SEEN[-1])
    assert "I ran this code myself" in sent
    assert "df['age'].median()" in sent
    assert "median 42.5" in sent

    _ask(client, worker, user, session_id, "and now?")  # nothing new ran meanwhile
    last = SEEN[-1]
    assert sum("I ran this code myself" in str(m.content) for m in last) == 1


def test_the_session_exports_as_a_notebook_that_runs(
    client: Client, worker: WorkerContext, tmp_path: Path
) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    session_id = client.session(user, [dataset["id"]], title="Census | 2024")["id"]
    _ask(client, worker, user, session_id, "average income by education")
    _execute(client, worker, user, session_id, CHART_CODE)
    _execute(client, worker, user, session_id, "df['nope'].sum()")
    _execute(client, worker, user, session_id, "print('top:', by_education['income'].max())")

    response = client.get(f"/api/sessions/{session_id}/export.ipynb", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ipynb+json")
    assert 'filename="Census_2024.ipynb"' in response.headers["content-disposition"]
    book = nbformat.reads(response.text, as_version=4)
    nbformat.validate(book)

    kinds = [c.cell_type for c in book.cells]
    sources = [c.source for c in book.cells]
    assert kinds[:2] == ["markdown", "code"]
    assert "census.parquet" in sources[1]
    assert any(s.startswith("**Question**") and "average income" in s for s in sources)
    code_cells = [c for c in book.cells if c.cell_type == "code"][1:]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1))
    mine = next(c for c in code_cells if c.source == CHART_CODE)
    output_kinds = {k for o in mine.outputs for k in o.get("data", {})}
    assert {"text/html", "application/vnd.plotly.v1+json"} <= output_kinds
    assert any(o.get("text") == "groups: 4\n" for o in mine.outputs)
    failed = next(s for s in sources if "df['nope']" in s)
    assert "did not run to the end" in failed
    assert "KeyError" in failed

    # "runs top to bottom against the dataset files": every code cell, in order, in a
    # plain Python process next to the dataset downloaded as Parquet
    parquet = client.get(
        f"/api/datasets/{dataset['id']}/download?format=parquet", headers=user.headers
    )
    (tmp_path / "census.parquet").write_bytes(parquet.content)
    script = "\n\n".join(
        ["display = print  # what Jupyter provides"]
        + [c.source for c in book.cells if c.cell_type == "code"]
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert "groups: 4" in ran.stdout
    assert "top: 95000.0" in ran.stdout


def test_an_empty_session_exports_too(client: Client) -> None:
    user = client.user()
    session_id = client.session(user)["id"]
    response = client.get(f"/api/sessions/{session_id}/export.ipynb", headers=user.headers)
    book = nbformat.reads(response.text, as_version=4)
    assert [c.cell_type for c in book.cells] == ["markdown"]
