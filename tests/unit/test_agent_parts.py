"""The agent's parts on their own: column checks, the offline model's plans (run for real
in the process sandbox), the workspace store, history repair, and the checkpoint size."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from api.ingest.convert import _large_offsets
from api.naming import variable_name
from worker import workspace
from worker.agent import columns
from worker.agent import graph as agent_graph
from worker.agent.graph import sanitize, window
from worker.agent.nlq import codegen, parse
from worker.agent.nlq.schema import tables
from worker.agent.offline import OfflineChatModel
from worker.agent.tools import Execution
from worker.sandbox.process import ProcessBackend, ProcessConfig

CENSUS = {
    "variable": "census",
    "name": "census.csv",
    "rows": 8,
    "columns": {
        "age": "int64",
        "income": "double",
        "education": "large_string",
        "workclass": "large_string",
        "joined": "timestamp[us]",
    },
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ProcessBackend]:
    with ProcessBackend(ProcessConfig(warm=True, pool_size=2, uid_base=66000)) as backend:
        yield backend


@pytest.fixture(scope="module")
def census_arrow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = pd.DataFrame(
        {
            "age": [25, 30, 35, 40, 45, 50, 55, 60],
            "income": [30000.0, 45000, 55000, 65000, 75000, 85000, 95000, 105000],
            "education": ["HS", "BS", "BS", "MS", "MS", "PhD", "PhD", "PhD"],
            "workclass": ["Private", "Private", "Gov", "Private", "Gov", "Private", "Self", "Self"],
            "joined": pd.date_range("2024-01-15", periods=8, freq="45D"),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    path = tmp_path_factory.mktemp("census") / "data.arrow"
    feather.write_feather(table.cast(_large_offsets(table.schema)), str(path))
    return path


def test_unknown_columns_come_back_with_suggestions() -> None:
    frames = {"df": ["age", "income", "education"]}
    problems = columns.check("df['Incme'].mean() + df.agee.sum()", frames)
    assert problems == [
        {"variable": "df", "column": "Incme", "suggestions": ["income"]},
        {"variable": "df", "column": "agee", "suggestions": ["age"]},
    ]
    text = columns.message(problems, frames)
    assert "Did you mean 'income'?" in text
    assert "Columns of df: 'age', 'income'" in text
    assert columns.check("df.groupby('Education')['income'].mean()", frames)[0]["suggestions"] == [
        "education"
    ]


@pytest.mark.parametrize(
    "code",
    [
        "df['age'].mean()",
        "df[['age', 'income']].corr()",
        "df['ratio'] = df['income'] / df['age']\ndf['ratio'].max()",  # created here
        "df = df.rename(columns={'age': 'years'})\ndf['years'].max()",  # rebound
        "df.assign(x=1)['x']",  # reshaped
        "df.describe().T",  # an attribute of DataFrame, not a column
        "other['whatever']",  # not a dataset
        "this is not python",
    ],
)
def test_valid_or_uncheckable_snippets_pass(code: str) -> None:
    assert columns.check(code, {"df": ["age", "income"]}) == []


def test_dataset_names_become_identifiers() -> None:
    taken = {"df"}
    assert variable_name("Sales 2024.csv", taken) == "sales_2024"
    assert variable_name("2024.csv", taken) == "data_2024"
    assert variable_name("class", taken) == "data_class"
    assert variable_name("df", taken) == "df_2"


def plan(question: str, schema: dict[str, Any] = CENSUS) -> codegen.Snippet:
    known = tables([schema])
    result = parse.understand(question, known)
    assert isinstance(result, parse.Understood), (question, result)
    return codegen.snippet(result.query, known[0])


def test_columns_are_found_by_name_plural_words_and_initials_and_typos_are_asked_about() -> None:
    schema = {
        "variable": "sales",
        "columns": {
            "unit_price": "double",
            "price": "double",
            "region": "str",
            "Order Date": "date32",
        },
    }
    known = tables([schema])
    result = parse.understand("average unit price by regions", known)
    assert isinstance(result, parse.Understood)
    assert (result.query.measure, result.query.group_by) == ("unit_price", ["region"])
    result = parse.understand("trend of price by order date", known)
    assert isinstance(result, parse.Understood)
    assert (result.query.intent, result.query.date) == ("trend", "Order Date")
    typo = parse.understand("average price by reigon", known)
    assert isinstance(typo, parse.NotUnderstood)
    assert (typo.unknown, typo.did_you_mean) == (["reigon"], ["region"])


QUESTIONS = [
    ("give me an overview", "describe"),
    ("what columns are there?", "dtypes"),
    ("any missing values?", "isna"),
    ("how many rows?", "len(data)"),
    ("distribution of age", "histogram"),
    ("distribution of education", "value_counts"),
    ("counts by workclass", ".size()"),
    ("income vs age", "scatter"),
    ("income across education, compare them", "px.box"),
    ("correlation matrix", "corr"),
    ("correlation between age and income", "corr"),
    ("average income by education", "groupby"),
    ("median age", "median"),
    ("top 3 income", "nlargest"),
    ("top 2 education by total income", "nlargest"),
    ("monthly trend of income over time", "to_period"),
    ("predict income", "LinearRegression"),
    ("classify workclass", "LogisticRegression"),
]


@pytest.mark.parametrize(("question", "marker"), QUESTIONS)
def test_offline_plans_are_real_code_that_runs_in_the_sandbox(
    question: str, marker: str, sandbox: ProcessBackend, census_arrow: Path
) -> None:
    snippet = plan(question)
    assert marker in snippet.code
    assert not columns.check(snippet.code, {"census": list(CENSUS["columns"])})
    result = sandbox.run(
        {
            "code": snippet.code,
            "datasets": [{"name": "census", "path": str(census_arrow), "format": "arrow"}],
        }
    )
    assert result["ok"], (question, result["error"])
    assert result["result"] is not None or result["tables"] or result["stdout"]


def test_the_offline_model_remembers_and_admits_what_it_cannot_do() -> None:
    model = OfflineChatModel()
    system = SystemMessage("Datasets (JSON):\n" + json.dumps([CENSUS]))
    history = [system, HumanMessage("My name is bob", id="1"), AIMessage("Nice", id="2")]
    assert model.invoke([*history, HumanMessage("what's my name?")]).content == "Your name is Bob."
    assert model.invoke([system, HumanMessage("who am I?")]).content.startswith("You haven't")
    poem = str(model.invoke([system, HumanMessage("write me a poem")]).content)
    assert poem.startswith("I did not understand “write”, “poem”.")
    assert "OPENAI_API_KEY" in poem
    call = model.invoke([system, HumanMessage("What is the mean age?")])
    assert call.content == "Plan: average age."
    assert call.tool_calls
    assert call.tool_calls[0]["name"] == "run_python"
    done = Execution(id=uuid.uuid4(), result={"ok": True, "result": "42.5", "error": None})
    tool = ToolMessage(
        done.summary(), artifact=done.artifact(), tool_call_id=call.tool_calls[0]["id"]
    )
    assert model.invoke([system, HumanMessage("What is the mean age?"), call, tool]).content == (
        "Average age: **42.5**."
    )


def test_a_history_cut_by_a_crash_is_repaired_for_the_model() -> None:
    call = AIMessage("", tool_calls=[{"name": "run_python", "args": {}, "id": "a"}], id="m2")
    messages = [
        HumanMessage("q1", id="m1"),
        call,  # its result never came: the worker died
        HumanMessage("q2", id="m3"),
        ToolMessage("orphan", tool_call_id="zzz", id="m4"),
    ]
    assert [m.id for m in sanitize(messages)] == ["m1", "m3"]
    assert [m.id for m in window([*messages, AIMessage("x", id="m5")], 2)] == ["m5"]
    assert [m.id for m in window(messages, 2)] == ["m3", "m4"]


def test_the_workspace_keeps_frames_and_values_by_identifier_only(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(pd.DataFrame({"a": [1, 2]}))
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    entries = [
        {"name": "young", "kind": "dataframe", "arrow": base64.b64encode(sink.getvalue()).decode(),
         "shape": [2, 1], "columns": ["a"]},
        {"name": "answer", "kind": "value", "value": {"x": [1, 2]}},
        {"name": "../../etc/evil", "kind": "value", "value": 1},
        {"name": "_private", "kind": "value", "value": 1},
    ]  # fmt: skip
    kept = workspace.store(tmp_path, entries, sequence=1)
    assert [k["name"] for k in kept] == ["young", "answer"]
    jobs = {e["name"]: e for e in workspace.job_entries(tmp_path)}
    assert set(jobs) == {"young", "answer"}
    assert json.loads(Path(jobs["answer"]["path"]).read_text()) == {"x": [1, 2]}
    assert workspace.describe(tmp_path) == [
        'answer = {"x": [1, 2]}',
        "young: DataFrame 2 rows x 1 columns (a)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "answer.json",
        "index.json",
        "young.arrow",
    ]


def test_the_message_channel_keeps_the_newest_and_folds_batches_alike() -> None:
    """DeltaChannel replays stored writes in batches of any size: the reducer must give the
    same state however they are grouped, and keep only the newest messages."""
    reduce = agent_graph.Trimmed(3)
    batches = [
        [HumanMessage(content=str(i), id=str(i)), AIMessage(content=f"a{i}", id=f"a{i}")]
        for i in range(4)
    ]
    one_by_one: list[Any] = []
    for batch in batches:
        one_by_one = reduce(one_by_one, [batch])
    at_once = reduce([], batches)
    assert one_by_one == at_once
    assert [m.content for m in at_once] == ["a2", "3", "a3"]
    assert agent_graph.Trimmed(3) == reduce != agent_graph.Trimmed(4)


def test_the_offline_examples_shown_to_users_are_understood() -> None:
    """GET /api/model lists these as what the offline model answers: each must plan code."""
    from api.routes.info import OFFLINE_EXAMPLES

    dated = {**CENSUS, "columns": {**CENSUS["columns"], "signup_date": "date32[day]"}}
    for example in OFFLINE_EXAMPLES:
        if example.startswith("My name is"):
            continue  # remembered, not planned: covered by the memory tests
        plan(example, dated)
