"""The runner's own behaviour, as the agent sees it: the value of the last line, printed
output, errors and their lines, tables, figures, datasets, the session workspace, the
output cap and the policy's messages, and the result contract of `python -m runner`.

The runner runs here unsandboxed, in a plain subprocess (`python -m tests.runner_harness`,
one shared process for the module, or `python -m runner` for the CLI contract), to test
the language layer and the result contract. It is never imported into the test process: it
installs process-wide patches (an audit hook, library wrappers, numpy print options). The OS
isolation around it is tested in tests/security/ and tests/integration/test_sandbox_process.py.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from runner.main import READY_LINE
from tests.builders import dataset_files

REPO = Path(__file__).resolve().parents[2]
# runner.main.DEFAULT_LIMITS["max_output_bytes"]: the cap when a job sets none.
DEFAULT_MAX_OUTPUT = 8 << 20
RESULT_KEYS = {
    "ok",
    "error",
    "stdout",
    "result",
    "tables",
    "figures",
    "workspace",
    "notes",
    "duration_ms",
}
TABLE_KEYS = {"name", "columns", "rows", "truncated", "total_rows", "total_columns"}
# How long one job may take in the harness before the test gives up on it.
JOB_DEADLINE_S = 60
# pandas' dtype for text columns ("str" with pandas 3, "object" before).
TEXT_DTYPE = str(pd.Series(["a"]).dtype)

Run = Callable[..., dict[str, Any]]

CENSUS = pd.DataFrame(
    {
        "age": [25, 30, 35, 40, 45, 50, 55, 60],
        "income": [30000.0, 45000.0, 55000.0, 65000.0, 75000.0, 85000.0, 95000.0, 105000.0],
        "education": ["HS", "BS", "BS", "MS", "MS", "PhD", "PhD", "PhD"],
    }
)


def check_contract(result: dict[str, Any], raw: str, max_output: int) -> None:
    """What holds for every result, whatever the snippet did."""
    assert set(result) == RESULT_KEYS, sorted(result)
    assert len(raw.encode()) <= max_output, f"{len(raw.encode())} bytes over a {max_output} cap"
    assert isinstance(result["ok"], bool)
    assert isinstance(result["stdout"], str)
    assert result["result"] is None or isinstance(result["result"], str)
    assert isinstance(result["duration_ms"], int)
    assert result["duration_ms"] >= 0
    assert all(isinstance(note, str) for note in result["notes"])
    assert all(isinstance(figure, dict) for figure in result["figures"])
    for table in result["tables"]:
        assert set(table) == TABLE_KEYS, sorted(table)
    error = result["error"]
    if result["ok"]:
        assert error is None
    else:
        assert set(error) == {"type", "message", "line"}, error
        assert error["line"] is None or isinstance(error["line"], int)
        # The user's error, never the runner's own traceback or files.
        for leak in ("Traceback", "runner/", 'File "'):
            assert leak not in error["message"], error


class Harness:
    """One `python -m tests.runner_harness` process: a job per line in, a result per line out."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process = self._start()

    def _start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.runner_harness", *self.args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def job(self, job: dict[str, Any]) -> dict[str, Any]:
        if self.process.poll() is not None:  # a failed test killed it: not the next one's fault
            self.process = self._start()
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(job) + "\n")
        stdin.flush()
        ready, _, _ = select.select([stdout], [], [], JOB_DEADLINE_S)
        if not ready:
            self.process.kill()
            pytest.fail(f"the runner gave no result within {JOB_DEADLINE_S} s")
        raw = stdout.readline()
        assert raw, f"the harness ended (exit code {self.process.wait()})"
        result = json.loads(raw)
        cap = int((job.get("limits") or {}).get("max_output_bytes", DEFAULT_MAX_OUTPUT))
        check_contract(result, raw.rstrip("\n"), cap)
        return result

    def run(self, code: str, **fields: Any) -> dict[str, Any]:
        return self.job({"code": code, **fields})

    def close(self) -> None:
        """End of input: the harness ends normally (and coverage saves its data)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            assert self.process.wait(timeout=30) == 0
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """Prepared as the warm pool prepares its processes (libraries imported and exercised
    once); the runner is reused for every job, which is what the warm pool's children do
    for their warm-up snippet and their job."""
    shared = Harness("--warm")
    yield shared
    shared.close()


@pytest.fixture
def run(harness: Harness) -> Run:
    return harness.run


@pytest.fixture(scope="module")
def census(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return dataset_files(CENSUS, tmp_path_factory.mktemp("census"))


def dataset(path: Path, name: str = "df", fmt: str = "arrow") -> dict[str, Any]:
    return {"name": name, "path": str(path), "format": fmt}


def frame(entry: dict[str, Any]) -> pd.DataFrame:
    """A workspace entry's DataFrame, from its base64 Arrow IPC bytes."""
    data = base64.b64decode(entry["arrow"])
    return pa.ipc.open_file(pa.BufferReader(data)).read_all().to_pandas()


def kept(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in result["workspace"]}


def carry(result: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """What the worker does between two snippets: store each workspace entry in a file and
    hand the files to the next job as its `workspace`."""
    entries = []
    for entry in result["workspace"]:
        if entry["kind"] == "dataframe":
            path = folder / f"{entry['name']}.arrow"
            path.write_bytes(base64.b64decode(entry["arrow"]))
        else:
            path = folder / f"{entry['name']}.json"
            path.write_text(json.dumps(entry["value"]))
        entries.append({"name": entry["name"], "path": str(path), "kind": entry["kind"]})
    return entries


def values(array: Any) -> np.ndarray:
    """A figure's data array: a plain list, or plotly's typed array ({dtype, bdata})."""
    if isinstance(array, dict) and "bdata" in array:
        data = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        return data.reshape(array["shape"]) if "shape" in array else data
    return np.asarray(array)


def failed(result: dict[str, Any], kind: str, fragment: str, line: int | None = None) -> None:
    """The snippet failed with this error type, a message containing `fragment`, on `line`."""
    assert result["ok"] is False, result
    error = result["error"]
    assert error["type"] == kind, error
    assert fragment in error["message"], error
    assert error["line"] == line, error


def cli(job: Any, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """`python -m runner` with this job (JSON-encoded unless it is text already) on stdin."""
    text = job if isinstance(job, str) else json.dumps(job)
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=REPO,
        input=text,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=JOB_DEADLINE_S,
        check=False,
        **options,
    )


# --- the value of the last line, and printed output -------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("x = 40\nx + 2", "42"),
        ("'text'", "'text'"),
        ("{'a': [1, 2.5, None]}", "{'a': [1, 2.5, None]}"),
        ("1\n2\n", "2"),
        ("float('nan')", "nan"),
    ],
)
def test_the_last_expression_comes_back_as_its_repr(run: Run, code: str, expected: str) -> None:
    result = run(code)
    assert result["ok"] is True
    assert result["result"] == expected


@pytest.mark.parametrize("code", ["x = 1", "", "   \n", "# a comment only", "None", "x = [1]\nx"])
def test_statements_only_give_no_result(run: Run, code: str) -> None:
    result = run(code)
    assert result["ok"] is True
    if code == "x = [1]\nx":  # the control: the same name as the last expression
        assert result["result"] == "[1]"
    else:
        assert result["result"] is None


def test_print_goes_to_stdout(run: Run) -> None:
    code = (
        "print('hello', 42)\n"
        "def shout(word):\n"
        "    print(word.upper(), end='!\\n')\n"
        "shout('hi')\n"
        "print('a', 'b', sep='-')\n"
        "done = True"
    )
    result = run(code)
    assert result["ok"] is True
    assert result["stdout"] == "hello 42\nHI!\na-b\n"
    assert result["result"] is None


def test_numpy_scalars_print_plainly(run: Run) -> None:
    """NumPy 2 shows scalars with their type (`np.True_`, `np.int64(3)`): the runner shows
    them as Python does, in results and in printed text."""
    code = (
        "import numpy as np\n"
        "print((np.int64(3), np.bool_(True)), np.float64(0.5))\n"
        "(np.int64(3), np.bool_(True))"
    )
    result = run(code)
    assert result["result"] == "(3, True)"
    assert result["stdout"] == "(3, True) 0.5\n"
    assert run("import numpy as np\nnp.float64(2.5)")["result"] == "2.5"
    assert run("import numpy as np\nnp.arange(3).sum()")["result"] == "3"


@pytest.mark.parametrize("code", ["print('hello')", "x = 2\nprint(x * 21)"])
def test_a_print_on_the_last_line_prints(run: Run, code: str) -> None:
    result = run(code)
    assert result["error"] is None
    assert result["stdout"] in ("hello\n", "42\n")
    assert result["result"] is None


def test_a_flood_of_printed_output_is_truncated_with_a_marker(run: Run) -> None:
    """Printed text is kept up to a quarter of the output cap (in characters); the rest is
    counted, not stored."""
    code = "for i in range(2000):\n    print('x' * 49)"  # 2000 lines of 50 characters
    result = run(code, limits={"max_output_bytes": 40_000})
    assert result["ok"] is True
    kept_text, marker = result["stdout"].split("\n[output truncated: ")
    assert kept_text == ("x" * 49 + "\n") * 200  # exactly 10_000 characters
    assert marker == f"{2000 * 50 - 10_000} more characters]"


# --- the output cap ---------------------------------------------------------------------------


def test_a_huge_result_is_cut_to_ten_thousand_characters(run: Run) -> None:
    result = run("'a' * 100_000")
    assert result["ok"] is True
    assert result["result"] == "'" + "a" * 9_999
    assert result["notes"] == []


def test_a_result_over_a_small_cap_is_shortened_with_a_note(run: Run) -> None:
    result = run("'a' * 100_000", limits={"max_output_bytes": 8_000})
    assert result["ok"] is True
    assert result["result"] == "'" + "a" * 999  # an eighth of the cap
    assert "The output was over 8000 bytes: result was shortened." in result["notes"]


def test_tables_over_the_cap_are_left_out_with_a_note_and_the_rest_kept(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "print('made five tables')\n"
        "for i in range(5):\n"
        "    display(pd.DataFrame({'a': range(300), 'b': ['x' * 50] * 300}))\n"
        "answer = 42\n"
        "answer"
    )
    result = run(code, limits={"max_output_bytes": 20_000})
    assert result["ok"] is True
    assert result["tables"] == []
    assert "The output was over 20000 bytes: tables were left out." in result["notes"]
    assert result["stdout"] == "made five tables\n"
    assert result["result"] == "42"


def test_a_figure_over_the_cap_is_left_out_with_a_note_and_the_rest_kept(run: Run) -> None:
    code = (
        "import numpy as np\n"
        "import plotly.express as px\n"
        "fig = px.scatter(x=np.arange(5000), y=np.arange(5000))\n"
        "points = 5000\n"
        "points"
    )
    result = run(code, limits={"max_output_bytes": 20_000})
    assert result["ok"] is True
    assert result["figures"] == []
    assert result["notes"] == ["The output was over 20000 bytes: figures were left out."]
    assert kept(result)["points"]["value"] == 5000
    assert result["result"] == "5000"


def test_an_error_survives_a_cap_too_small_for_anything_else(run: Run) -> None:
    result = run(
        "note = 'y' * 3000\nraise ValueError('x' * 5000)", limits={"max_output_bytes": 1000}
    )
    failed(result, "ValueError", "x" * 250, line=2)
    assert result["error"]["message"] == "x" * 250  # a quarter of the cap
    assert result["workspace"] == []
    assert result["notes"] == ["The output was over 1000 bytes and was left out."]


def test_the_cap_notes_name_only_what_was_left_out(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "for i in range(5):\n"
        "    display(pd.DataFrame({'a': range(300), 'b': ['x' * 50] * 300}))"
    )
    result = run(code, limits={"max_output_bytes": 20_000})
    assert result["notes"] == ["The output was over 20000 bytes: tables were left out."]


# --- errors ----------------------------------------------------------------------------------


def test_an_error_reports_its_type_message_and_the_line_of_the_snippet(run: Run) -> None:
    result = run("a = 1\nb = 0\na / b\nc = 2")
    failed(result, "ZeroDivisionError", "division by zero", line=3)
    assert result["error"]["message"] == "division by zero"
    assert result["stdout"] == ""
    assert result["result"] is None


def test_an_error_in_a_snippet_function_reports_the_line_that_raised(run: Run) -> None:
    result = run("def check(x):\n    raise ValueError(f'bad {x}')\n\ncheck(7)")
    failed(result, "ValueError", "bad 7", line=2)


def test_an_error_inside_a_library_reports_the_line_of_the_snippet(run: Run) -> None:
    code = "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\n\ndf['nope']"
    failed(run(code), "KeyError", "'nope'", line=4)


def test_what_ran_before_an_error_is_kept(run: Run) -> None:
    """Printed text and the variables set before the failing line still come back."""
    result = run("print('step 1')\ntotal = 10\nitems = [1, 2]\ntotal / 0")
    failed(result, "ZeroDivisionError", "division by zero", line=4)
    assert result["stdout"] == "step 1\n"
    assert {name: entry["value"] for name, entry in kept(result).items()} == {
        "total": 10,
        "items": [1, 2],
    }


@pytest.mark.parametrize(
    ("code", "line", "message"),
    [
        ("x = 1 +", 1, "invalid syntax"),
        ("x = 1\ny = (\n", 2, "'(' was never closed"),
        ("a = 1\nif a\n    b = 2", 2, "expected ':'"),
    ],
)
def test_a_syntax_error_is_reported_with_its_line(
    run: Run, code: str, line: int, message: str
) -> None:
    result = run(code)
    failed(result, "SyntaxError", message, line=line)
    assert result["workspace"] == []  # nothing ran


@pytest.fixture(scope="module")
def untraced() -> Iterator[Harness]:
    """A warm harness with coverage's tracer stopped: a SIGALRM landing inside the tracer
    can leave its lock held (see tests/runner_harness.py); a sandboxed runner has none."""
    shared = Harness("--warm", "--untraced")
    yield shared
    shared.close()


def test_a_runaway_loop_ends_with_a_timeout_error(untraced: Harness) -> None:
    """Even one that catches every Exception: the soft timeout is not one."""
    run = untraced.run
    code = "n = 0\nwhile True:\n    try:\n        n += 1\n    except Exception:\n        pass"
    result = run(code, limits={"timeout_s": 1})
    failed(result, "TimeoutError", "The snippet ran longer than 1 s and was stopped after ", None)
    # Stopped at the limit it names, not before it (it used to fire at 90 % of it).
    assert 1000 <= result["duration_ms"] < 5000
    stopped_after = float(result["error"]["message"].rsplit(" after ", 1)[1].removesuffix(" s."))
    assert 1.0 <= stopped_after <= result["duration_ms"] / 1000 + 0.05
    # The process's next job runs to its end: no alarm left over.
    assert run("sum(range(10))")["result"] == "45"


def test_running_out_of_memory_is_reported_with_the_limit(run: Run) -> None:
    # 4 PiB: more than any address space, so the allocation fails at once.
    result = run("kept = 1\nbuffer = bytearray(2 ** 52)", limits={"memory_mb": 256})
    failed(result, "MemoryError", "more than the 256 MB it may use", line=None)


# --- tables -----------------------------------------------------------------------------------


def test_a_dataframe_on_the_last_line_is_a_table_not_a_result(run: Run) -> None:
    result = run("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert result["result"] is None
    assert result["tables"] == [
        {
            "name": "result",
            "columns": ["a", "b"],
            "rows": [[1, "x"], [2, "y"]],
            "truncated": False,
            "total_rows": 2,
            "total_columns": 2,
        }
    ]


def test_a_long_frame_is_capped_at_200_rows_and_flagged(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "pd.DataFrame({'n': range(1000), 'half': [i / 2 for i in range(1000)]})"
    )
    (table,) = run(code)["tables"]
    assert table["columns"] == ["n", "half"]
    assert len(table["rows"]) == 200
    assert table["rows"][0] == [0, 0.0]
    assert table["rows"][-1] == [199, 99.5]
    assert table["truncated"] is True
    assert table["total_rows"] == 1000


def test_a_wide_frame_is_capped_at_100_columns_and_flagged(run: Run) -> None:
    code = "import pandas as pd\nimport numpy as np\npd.DataFrame(np.ones((3, 150)))"
    (table,) = run(code)["tables"]
    assert table["columns"] == [str(i) for i in range(100)]
    assert all(len(row) == 100 for row in table["rows"])
    assert len(table["rows"]) == 3
    assert table["truncated"] is True
    assert table["total_columns"] == 150


def test_a_series_is_a_one_column_table(run: Run) -> None:
    (named,) = run("import pandas as pd\npd.Series([1, 2], name='count')")["tables"]
    assert (named["columns"], named["rows"]) == (["count"], [[1], [2]])
    (unnamed,) = run("import pandas as pd\npd.Series([3.5])")["tables"]
    assert (unnamed["columns"], unnamed["rows"]) == (["value"], [[3.5]])


def test_a_grouped_result_shows_its_index_as_a_column(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "df = pd.DataFrame({'g': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n"
        "df.groupby('g')['v'].sum()"
    )
    (table,) = run(code)["tables"]
    assert table["columns"] == ["g", "v"]
    assert table["rows"] == [["a", 4], ["b", 2]]


def test_display_shows_each_value_as_its_own_table(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "df = pd.DataFrame({'a': [1, 2]})\n"
        "display(df, df['a'] * 10)\n"
        "display('not a frame')\n"
        "3"
    )
    result = run(code)
    assert [(t["name"], t["columns"], t["rows"]) for t in result["tables"]] == [
        ("display_1", ["a"], [[1], [2]]),
        ("display_2", ["a"], [[10], [20]]),
    ]
    assert result["result"] == "3"


def test_table_cells_are_plain_json_values(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "pd.DataFrame({\n"
        "    'day': pd.to_datetime(['2024-01-02 00:00:00', '2024-03-04 05:06:07']),\n"
        "    'f': [1.5, float('nan')],\n"
        "    's': ['x' * 1500, None],\n"
        "    'wait': pd.to_timedelta(['1h', '90s']),\n"
        "    'c': pd.Categorical(['u', 'v']),\n"
        "    'flag': [True, False],\n"
        "})"
    )
    result = run(code)
    assert result["error"] is None, result["error"]
    (table,) = result["tables"]
    assert table["columns"] == ["day", "f", "s", "wait", "c", "flag"]
    first, second = table["rows"]
    assert first == ["2024-01-02T00:00:00", 1.5, "x" * 1000 + "…", 3600.0, "u", True]
    assert second == ["2024-03-04T05:06:07", None, None, 90.0, "v", False]


def test_table_cells_holding_containers_and_odd_scalars_are_json_values(run: Run) -> None:
    """Lists per group (`agg(list)`), dicts, bytes, decimals, nullable integers, periods."""
    code = (
        "import numpy as np\n"
        "import pandas as pd\n"
        "from decimal import Decimal\n"
        "pd.DataFrame({\n"
        "    'items': [[1, np.int64(2)], {'a': 1}],\n"
        "    'raw': [b'ab', Decimal('1.5')],\n"
        "    'n': pd.array([1, None], dtype='Int64'),\n"
        "    'span': [pd.Period('2024-01', 'M'), pd.Interval(0, 1)],\n"
        "    'arr': [np.array([1, 2]), np.array([3.5])],\n"
        "})"
    )
    result = run(code)
    assert result["error"] is None, result["error"]
    (table,) = result["tables"]
    assert table["rows"] == [
        [[1, 2], base64.b64encode(b"ab").decode(), 1, "2024-01", [1, 2]],
        [{"a": 1}, 1.5, None, "(0, 1]", [3.5]],
    ]


def test_a_missing_timestamp_in_a_table_is_null(run: Run) -> None:
    code = "import pandas as pd\npd.DataFrame({'day': pd.to_datetime(['2024-01-02', None])})"
    (table,) = run(code)["tables"]
    assert table["rows"] == [["2024-01-02T00:00:00"], [None]]


# --- figures ----------------------------------------------------------------------------------


def test_a_figure_made_in_the_snippet_is_returned_as_plotly_json(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "import plotly.express as px\n"
        "sales = pd.DataFrame({'region': ['north', 'south'], 'amount': [3, 5]})\n"
        "fig = px.bar(sales, x='region', y='amount', title='Sales by region')\n"
        "total = int(sales['amount'].sum())"
    )
    result = run(code)
    assert result["ok"] is True
    (figure,) = result["figures"]
    (trace,) = figure["data"]
    assert trace["type"] == "bar"
    assert list(values(trace["x"])) == ["north", "south"]
    assert values(trace["y"]).tolist() == [3, 5]
    assert figure["layout"]["title"]["text"] == "Sales by region"
    # The figure is not a workspace value, and dropping it is not worth a note.
    assert set(kept(result)) == {"sales", "total"}
    assert result["notes"] == []


def test_a_figure_on_the_last_line_is_a_figure_not_a_result(run: Run) -> None:
    code = (
        "import plotly.graph_objects as go\n"
        "fig = go.Figure()\n"
        "fig.add_scatter(x=[1, 2], y=[3, 4], name='line')\n"
        "fig"
    )
    result = run(code)
    assert result["result"] is None
    (figure,) = result["figures"]  # shown once, though named and on the last line
    assert figure["data"] == [{"x": [1, 2], "y": [3, 4], "name": "line", "type": "scatter"}]


def test_only_the_first_twenty_figures_are_kept(run: Run) -> None:
    code = (
        "import plotly.graph_objects as go\n"
        "for i in range(21):\n"
        "    go.Figure(layout={'title': {'text': f'chart {i}'}})"
    )
    result = run(code)
    assert len(result["figures"]) == 20
    assert result["figures"][-1]["layout"]["title"]["text"] == "chart 19"
    assert result["notes"] == ["21 figures were made; the first 20 are kept."]


def test_a_scatter_of_many_points_keeps_an_evenly_spaced_sample(run: Run) -> None:
    code = (
        "import numpy as np\n"
        "import plotly.express as px\n"
        "fig = px.scatter(x=np.arange(200_000), y=np.arange(200_000) * 2.0)"
    )
    result = run(code)
    (figure,) = result["figures"]
    (trace,) = figure["data"]
    x, y = values(trace["x"]), values(trace["y"])
    assert len(x) == len(y) == 50_000  # every 4th point
    assert x[:3].tolist() == [0, 4, 8]
    assert (y == x * 2.0).all()  # x and y stay paired
    assert result["notes"] == [
        "The figure had 200000 points: its large traces keep an evenly spaced sample."
    ]


def test_a_histogram_of_many_values_is_binned_and_keeps_its_shape(run: Run) -> None:
    code = (
        "import numpy as np\n"
        "import plotly.express as px\n"
        "values = np.random.default_rng(0).normal(size=200_000)\n"
        "fig = px.histogram(x=values, title='spread')"
    )
    result = run(code)
    (figure,) = result["figures"]
    (bars,) = figure["data"]
    assert bars["type"] == "bar"
    centres, counts, widths = values(bars["x"]), values(bars["y"]), values(bars["width"])
    assert 10 < len(counts) < 2_000
    assert counts.sum() == 200_000  # every value in one bar
    assert centres[counts.argmax()] == pytest.approx(0, abs=0.25)  # the peak of a normal
    assert np.allclose(widths, widths[0])
    assert widths[0] > 0
    assert figure["layout"]["title"]["text"] == "spread"
    assert (
        "The figure had 200000 points: its histograms were binned before sending."
        in (result["notes"])
    )


def test_a_coloured_histogram_keeps_one_set_of_bins_for_its_groups(run: Run) -> None:
    code = (
        "import numpy as np\n"
        "import pandas as pd\n"
        "import plotly.express as px\n"
        "rng = np.random.default_rng(1)\n"
        "df = pd.DataFrame({'v': rng.normal(size=120_000), 'g': ['a', 'b', 'b'] * 40_000})\n"
        "px.histogram(df, x='v', color='g', nbins=30)"
    )
    result = run(code)
    (figure,) = result["figures"]
    first, second = figure["data"]
    assert [first["name"], second["name"]] == ["a", "b"]
    assert values(first["x"]).tolist() == values(second["x"]).tolist()
    assert len(values(first["x"])) == 30
    assert values(first["y"]).sum() == 40_000
    assert values(second["y"]).sum() == 80_000


def test_a_histogram_of_many_text_values_keeps_every_category_count(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "import plotly.express as px\n"
        "df = pd.DataFrame({'region': ['north', 'south', 'east', 'west'] * 50_000})\n"
        "fig = px.histogram(df, x='region')"
    )
    result = run(code)
    (figure,) = result["figures"]
    (trace,) = figure["data"]
    if trace["type"] == "bar":
        counts = dict(zip(values(trace["x"]).tolist(), values(trace["y"]).tolist(), strict=True))
    else:
        counts = dict(Counter(values(trace["x"]).tolist()))
    assert counts == {"north": 50_000, "south": 50_000, "east": 50_000, "west": 50_000}


def test_a_summed_percent_histogram_is_binned_as_plotly_would(run: Run) -> None:
    """histfunc and histnorm survive binning: the bars are the shares of the summed y."""
    code = (
        "import numpy as np\n"
        "import pandas as pd\n"
        "import plotly.express as px\n"
        "df = pd.DataFrame({'x': np.arange(100_000) % 4, 'y': np.ones(100_000)})\n"
        "df.loc[df['x'] == 3, 'y'] = 2.0\n"
        "px.histogram(df, x='x', y='y', histfunc='sum', histnorm='percent', nbins=4)"
    )
    result = run(code)
    (figure,) = result["figures"]
    (trace,) = figure["data"]
    assert trace["type"] == "bar"
    shares = values(trace["y"]).tolist()
    assert [round(v, 6) for v in shares] == [20.0, 20.0, 20.0, 40.0]
    assert any("histograms were binned" in note for note in result["notes"])


def test_a_horizontal_histogram_of_categories_keeps_its_orientation(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "import plotly.express as px\n"
        "df = pd.DataFrame({'kind': ['b', 'a', 'a'] * 30_000})\n"
        "px.histogram(df, y='kind')"
    )
    (figure,) = run(code)["figures"]
    (trace,) = figure["data"]
    assert (trace["type"], trace["orientation"]) == ("bar", "h")
    assert values(trace["y"]).tolist() == ["b", "a"]  # in order of appearance, as Plotly
    assert values(trace["x"]).tolist() == [30_000, 60_000]


# --- datasets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "csv"])
def test_a_dataset_is_a_dataframe_under_its_name(
    run: Run, census: dict[str, Path], fmt: str
) -> None:
    code = (
        "(type(census).__name__, census.shape, [str(t) for t in census.dtypes], "
        "list(census.columns), int(census['age'].sum()), census['education'].iloc[-1])"
    )
    result = run(code, datasets=[dataset(census[fmt], "census", fmt)])
    assert result["error"] is None
    assert result["result"] == repr(
        (
            "DataFrame",
            (8, 3),
            ["int64", "float64", TEXT_DTYPE],
            ["age", "income", "education"],
            340,
            "PhD",
        )
    )


def test_a_dataset_the_snippet_does_not_name_is_never_read(
    run: Run, census: dict[str, Path], tmp_path: Path
) -> None:
    """Datasets load on first use: a missing file only matters to a snippet that names it."""
    datasets = [dataset(census["arrow"]), dataset(tmp_path / "gone.arrow", "other")]
    assert run("len(df)", datasets=datasets)["result"] == "8"
    failed(run("x = 1\nlen(other)", datasets=datasets), "FileNotFoundError", "gone.arrow", 2)


def test_a_dataset_in_an_unknown_format_fails_when_used(run: Run, census: dict[str, Path]) -> None:
    result = run("df.shape", datasets=[dataset(census["csv"], fmt="xlsx")])
    failed(result, "ValueError", "unknown dataset format 'xlsx'", line=1)


def test_a_dataset_read_through_a_few_columns_gives_whole_frame_answers(
    run: Run, census: dict[str, Path]
) -> None:
    """The runner may load only the columns a snippet names; answers must not change."""
    datasets = [dataset(census["parquet"], fmt="parquet")]
    code = "(df['income'].sum(), df[['age', 'education']].shape, df['age'].tolist()[:2])"
    assert run(code, datasets=datasets)["result"] == "(555000.0, (8, 2), [25, 30])"
    # A wrong name fails as it does on the whole frame.
    failed(run("df['salary'].sum()", datasets=datasets), "KeyError", "'salary'", line=1)


def test_a_dataset_that_is_only_read_is_not_sent_back(run: Run, census: dict[str, Path]) -> None:
    code = "summary = df.describe()\ndf.sort_values('age')\nolder = df[df['age'] > 50]\nlen(df)"
    result = run(code, datasets=[dataset(census["arrow"])])
    assert result["result"] == "8"
    assert set(kept(result)) == {"summary", "older"}


def test_a_dataset_changed_in_place_is_sent_back(run: Run, census: dict[str, Path]) -> None:
    result = run("df['decade'] = df['age'] // 10 * 10", datasets=[dataset(census["arrow"])])
    entry = kept(result)["df"]
    assert entry["shape"] == [8, 4]
    assert frame(entry)["decade"].tolist() == [20, 30, 30, 40, 40, 50, 50, 60]


# --- the workspace ----------------------------------------------------------------------------


def test_new_frames_and_plain_values_are_kept(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "people = pd.DataFrame({'name': ['ann', 'bob'], 'age': [31, 42]}, index=[10, 20])\n"
        "ages = people['age']\n"
        "count = 2\n"
        "ratio = 0.5\n"
        "label = 'people'\n"
        "flags = [True, None]\n"
        "pair = (1, 'a')\n"
        "nested = {'k': {'deep': [1, 2.5]}}\n"
    )
    result = run(code)
    entries = kept(result)
    assert list(entries) == ["people", "ages", "count", "ratio", "label", "flags", "pair", "nested"]
    people = entries["people"]
    assert (people["kind"], people["shape"], people["columns"], people["series"]) == (
        "dataframe",
        [2, 2],
        ["name", "age"],
        False,
    )
    restored = frame(people)
    assert restored["name"].tolist() == ["ann", "bob"]
    assert restored.index.tolist() == [10, 20]  # the index travels too
    assert entries["ages"]["series"] is True
    assert entries["ages"]["columns"] == ["age"]
    plain = {name: e["value"] for name, e in entries.items() if e["kind"] == "value"}
    assert plain == {
        "count": 2,
        "ratio": 0.5,
        "label": "people",
        "flags": [True, None],
        "pair": [1, "a"],
        "nested": {"k": {"deep": [1, 2.5]}},
    }
    assert result["notes"] == []


def test_modules_functions_and_classes_are_not_kept_and_need_no_note(run: Run) -> None:
    code = (
        "import math\n"
        "import plotly.express as px\n"
        "from collections import Counter\n"
        "def area(r):\n"
        "    return math.pi * r * r\n"
        "class Point:\n"
        "    pass\n"
        "square = lambda v: v * v\n"
        "fig = px.line(x=[1, 2], y=[1, 4])\n"
        "size = round(area(1), 2)"
    )
    result = run(code)
    assert result["workspace"] == [{"name": "size", "kind": "value", "value": 3.14}]
    assert result["notes"] == []


def test_values_that_cannot_be_kept_are_named_in_a_note(run: Run) -> None:
    code = (
        "import numpy as np\n"
        "class Point:\n"
        "    pass\n"
        "where = Point()\n"
        "seen = {1, 2}\n"
        "lazy = (i for i in range(3))\n"
        "grid = np.zeros(3)\n"
        "missing = float('nan')\n"
        "ok = 1"
    )
    result = run(code)
    assert list(kept(result)) == ["ok"]
    assert result["notes"] == [
        "Not kept for the next snippet (only DataFrames, Series and plain values are): "
        "where (Point), seen (set), lazy (generator), grid (ndarray), missing (float)."
    ]


def test_a_value_over_one_megabyte_is_not_kept_with_a_note(run: Run) -> None:
    result = run("numbers = list(range(300_000))\nsmall = [1]")
    assert list(kept(result)) == ["small"]
    assert result["notes"] == ["numbers is too large to keep between snippets."]


def test_a_frame_over_the_workspace_budget_is_not_kept_with_a_note(run: Run) -> None:
    """The workspace may take 3/8 of the result's cap (8 MB by default): 3 MB of Arrow."""
    code = (
        "import numpy as np\nimport pandas as pd\nhuge = pd.DataFrame({'x': np.zeros(8_500_000)})"
    )
    result = run(code)
    assert result["workspace"] == []
    assert result["notes"] == [
        "huge is not kept for the next snippet: the workspace of one snippet holds 3 MB "
        "(keep a smaller result, e.g. aggregate or select columns)."
    ]


def test_a_frame_arrow_cannot_type_is_kept_as_text(run: Run) -> None:
    result = run("import pandas as pd\nmixed = pd.DataFrame({'m': [1, 'a'], 'n': [1, 2]})")
    restored = frame(kept(result)["mixed"])
    assert restored["m"].tolist() == ["1", "a"]
    assert restored["n"].tolist() == ["1", "2"]


def test_the_workspace_feeds_the_next_snippet(run: Run, tmp_path: Path) -> None:
    first = run(
        "import pandas as pd\n"
        "people = pd.DataFrame({'name': ['ann', 'bob'], 'age': [31, 42]}, index=[10, 20])\n"
        "threshold = 35\n"
        "names = {'ann': 'Ann'}"
    )
    workspace = carry(first, tmp_path)
    second = run(
        "older = people[people['age'] > threshold]\n"
        "(list(older.index), older['name'].map(names).fillna('?').tolist(), threshold + 1)",
        workspace=workspace,
    )
    assert second["error"] is None
    assert second["result"] == "([20], ['?'], 36)"
    # Only what the second snippet made comes back: the loaded names did not change.
    assert list(kept(second)) == ["older"]


def test_loaded_names_that_did_not_change_are_not_sent_back(run: Run, tmp_path: Path) -> None:
    first = run("import pandas as pd\nw = pd.DataFrame({'a': [3, 1, 2]})\nv = {'k': [1, 2]}")
    workspace = carry(first, tmp_path)
    code = "w.sort_values('a')\nw.describe()\nv = v\nsame = w\ncopy = v['k']\nw.head(1)"
    result = run(code, workspace=workspace)
    assert result["error"] is None
    assert set(kept(result)) == {"same", "copy"}  # new names for the same objects


@pytest.mark.parametrize(
    ("change", "column", "expected"),
    [
        ("w['z'] = w['a'] * 10", "z", [30, 10, 20]),
        ("w.loc[w['a'] > 1, 'a'] = 0", "a", [0, 1, 0]),
        ("w['a'] += 1", "a", [4, 2, 3]),
        ("w.iloc[0, 0] = 9", "a", [9, 1, 2]),
        ("w.sort_values('a', inplace=True)", "a", [1, 2, 3]),
        ("w.insert(1, 'b', [7, 8, 9])", "b", [7, 8, 9]),
    ],
)
def test_a_loaded_frame_changed_in_place_is_sent_back(
    run: Run, tmp_path: Path, change: str, column: str, expected: list[int]
) -> None:
    first = run("import pandas as pd\nw = pd.DataFrame({'a': [3, 1, 2]})")
    result = run(change, workspace=carry(first, tmp_path))
    assert result["error"] is None
    assert frame(kept(result)["w"])[column].tolist() == expected


def test_a_loaded_value_changed_by_item_assignment_is_sent_back(run: Run, tmp_path: Path) -> None:
    first = run("v = {'k': [1, 2]}")
    result = run("v['total'] = sum(v['k'])", workspace=carry(first, tmp_path))
    assert kept(result)["v"]["value"] == {"k": [1, 2], "total": 3}


@pytest.mark.parametrize(
    "change", ["big.loc[big['a'] > 5, 'b'] = 0.0", "big.iloc[0, 1] = 7.0", "big.at[0, 'b'] = 7.0"]
)
def test_a_big_loaded_frame_changed_through_an_indexer_is_sent_back(
    run: Run, tmp_path: Path, change: str
) -> None:
    path = tmp_path / "big.arrow"
    big = pd.DataFrame({"a": np.arange(20_000), "b": np.ones(20_000), "c": np.arange(20_000)})
    feather.write_feather(big, str(path), compression="uncompressed")
    result = run(change, datasets=[dataset(path, "big")])
    assert result["error"] is None
    assert "big" in kept(result)


@pytest.mark.parametrize("change", ["lst.append(3)", "lst += [3]", "lst.extend([3])"])
def test_a_loaded_list_changed_in_place_is_sent_back(run: Run, tmp_path: Path, change: str) -> None:
    first = run("lst = [1, 2]")
    result = run(change, workspace=carry(first, tmp_path))
    assert result["error"] is None
    assert kept(result)["lst"]["value"] == [1, 2, 3]


def test_numpy_number_results_are_kept_as_plain_values(run: Run) -> None:
    code = (
        "import pandas as pd\n"
        "df = pd.DataFrame({'x': [1, 2, 3]})\n"
        "n = (df['x'] > 1).sum()\n"
        "m = df['x'].mean()"
    )
    result = run(code)
    assert kept(result)["m"]["value"] == 2.0
    assert kept(result)["n"]["value"] == 2


def test_a_series_comes_back_from_the_workspace_as_a_series(run: Run, tmp_path: Path) -> None:
    first = run("import pandas as pd\nages = pd.Series([31, 42], name='age')")
    workspace = [{**item, "series": True} for item in carry(first, tmp_path)]
    assert run("type(ages).__name__", workspace=workspace)["result"] == "'Series'"


def test_a_value_that_cannot_be_shown_does_not_lose_the_others(run: Run) -> None:
    code = (
        "import plotly.graph_objects as go\n"
        "fig = go.Figure()\n"
        "keep = 1\n"
        "deep = []\n"
        "for i in range(5000):\n"
        "    deep = [deep]\n"
        "deep"
    )
    result = run(code)
    assert result["ok"] is True
    assert result["notes"][0].startswith(
        "The value of the last line could not be shown (RecursionError: maximum recursion"
    )
    assert kept(result)["keep"]["value"] == 1
    assert len(result["figures"]) == 1


# --- the policy, from the user's side -----------------------------------------------------------


def test_importing_a_module_outside_the_allow_list_names_the_allowed_ones(run: Run) -> None:
    result = run("import math\nimport os")
    failed(result, "ImportError", "Module 'os' is not available in the sandbox. Allowed: ", 2)
    allowed = result["error"]["message"].split("Allowed: ")[1].rstrip(".").split(", ")
    assert {"pandas", "numpy", "plotly", "sklearn", "math", "json", "re"} <= set(allowed)
    assert "os" not in allowed
    failed(run("import pandas.io"), "ImportError", "Module 'pandas.io' is not available", 1)


def test_writing_a_file_is_refused_with_what_to_do_instead(run: Run) -> None:
    code = "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\ndf.to_csv('/tmp/x.csv')"
    failed(
        run(code),
        "PolicyError",
        "to_csv() cannot write files in the sandbox: call it without a path "
        "(it then returns the text or bytes), or give it an io.StringIO / io.BytesIO, "
        "instead.",
        line=3,
    )
    text = run("import pandas as pd\npd.DataFrame({'a': [1, 2]}).to_csv(index=False)")
    assert text["result"] == repr("a\n1\n2\n")


def test_reading_a_file_is_refused_with_where_the_data_is(run: Run) -> None:
    result = run("import pandas as pd\npd.read_csv('/etc/passwd')")
    failed(result, "PolicyError", "pandas.read_csv reads files or URLs.", line=2)
    assert (
        "Datasets are already loaded as DataFrames under their names"
        in (result["error"]["message"])
    )


def test_open_is_not_available(run: Run) -> None:
    failed(run("open('x')"), "PolicyError", "open() is not available in the sandbox", line=1)


def test_private_and_dunder_attributes_are_refused(run: Run) -> None:
    failed(
        run("x = 1\n(1).__class__"), "PolicyError", '"__class__" is an invalid attribute name', 2
    )
    failed(
        run("x = 1\ngetattr(x, '_private')"),
        "AttributeError",
        '"_private" is not available in the sandbox (names starting with "_" are private; '
        "only the snippet's own classes may keep such attributes).",
        line=2,
    )


def test_str_format_walks_are_refused_with_an_f_string_hint(run: Run) -> None:
    failed(run("x = 1\n'{0.real}'.format(x)"), "PolicyError", "an f-string", line=2)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("'{:.1f}'.format(2.25)", "'2.2'"),
        ("'{} and {}'.format(1, 'b')", "'1 and b'"),
        ("'{a:>4}'.format_map({'a': 7})", "'   7'"),
        ("import pandas as pd\npd.Series([1.234, 5.0]).map('{:.1f}'.format).tolist()",
         "['1.2', '5.0']"),
    ],
)  # fmt: skip
def test_a_literal_templates_format_that_looks_nothing_up_runs(
    run: Run, code: str, expected: str
) -> None:
    """Field names without `.` or `[` format what they are given, like an f-string."""
    assert run(code)["result"] == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("id(1) > 0", "True"),
        ("def f():\n    'Adds.'\nf.__doc__", "'Adds.'"),
        ("import numpy as np\nnp.testing.assert_allclose([1.0], [1.0 + 1e-9])\n'same'",
         "'same'"),
        ("import numpy as np\n"
         "np.lib.stride_tricks.sliding_window_view(np.arange(5), 3).sum(axis=1).tolist()",
         "[3, 6, 9]"),
        ("import numpy as np\na = np.zeros(2)\n(isinstance(a, np.ndarray), type(a) is np.ndarray, "
         "np.ndarray((2,), np.int64, np.arange(2)).tolist(), "
         "np.arange(3).view(np.ndarray).sum())", "(True, True, [0, 1], 3)"),
        ("import pandas as pd\ndf = pd.DataFrame({'unit price': [1, 5], 'n': [2, 3]})\n"
         "df.query('`unit price` > 2')['n'].tolist()", "[3]"),
        ("import numpy as np\nimport scipy.sparse as sp\n"
         "m = sp.csr_matrix(([1.0, 2.0], [0, 2], [0, 1, 2]), shape=(2, 3))\n"
         "(sp.issparse(m), isinstance(m, sp.csr_matrix), (m @ np.ones(3)).tolist(), "
         "type(m.T.tocsr()).__name__)", "(True, True, [1.0, 2.0], 'csr_matrix')"),
        ("import numpy as np\nr = np.recarray((2,), dtype=[('a', 'i8')])\nr.a = [1, 2]\n"
         "(isinstance(r, np.recarray), int(r.a.sum()), np.char.chararray((2,), itemsize=3).shape)",
         "(True, 3, (2,))"),
        ("import pandas as pd\ndf = pd.DataFrame({'unit price': [1, 5]})\n"
         "df.eval('`unit price` * 2').tolist()", "[2, 10]"),
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1, -2], 's': ['x', 'y']})\n"
         "df.assign(b=pd.col('a').abs() * 10, u=pd.col('s').str.upper())[['b', 'u']]"
         ".values.tolist()", "[[10, 'X'], [20, 'Y']]"),
    ],
)  # fmt: skip
def test_harmless_code_the_policy_used_to_refuse_runs(run: Run, code: str, expected: str) -> None:
    """Found by running the libraries' documentation examples: refused before, harmless."""
    result = run(code)
    assert result["error"] is None, result["error"]
    assert result["result"] == expected


def test_what_libraries_print_to_stdout_is_the_snippets_output(run: Run) -> None:
    """df.info(), np.info() and pd.describe_option() write to sys.stdout, not print()."""
    result = run(
        "import numpy as np\nimport pandas as pd\n"
        "pd.DataFrame({'a': [1, 2], 'b': ['x', None]}).info()\n"
        "np.info(np.add)\n"
        "pd.describe_option('display.max_rows')"
    )
    assert result["error"] is None
    out = result["stdout"]
    assert "RangeIndex: 2 entries" in out
    assert "1 non-null" in out
    assert "add(x1, x2" in out
    assert "display.max_rows" in out


ORDINARY = [
    (
        "new-column",
        "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3]})\ndf['z'] = df['x'] * 2\n"
        "df['z'].tolist()",
        "[2, 4, 6]",
    ),
    (
        "masked-loc-write",
        "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3]})\nm = df['x'] > 1\n"
        "df.loc[m, 'x'] = 0\ndf['x'].tolist()",
        "[1, 0, 0]",
    ),
    (
        "numpy-masked-write",
        "import numpy as np\na = np.arange(6)\na[a > 3] = 0\na.tolist()",
        "[0, 1, 2, 3, 0, 0]",
    ),
    (
        "dict-augmented-item",
        "d = {}\nfor k in 'abca':\n    d[k] = d.get(k, 0)\n    d[k] += 1\nd",
        "{'a': 2, 'b': 1, 'c': 1}",
    ),
    (
        "frame-augmented-column",
        "import pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})\ndf['x'] += 1\ndf['x'].tolist()",
        "[2, 3]",
    ),
    (
        "class-writing-self",
        "class Acc:\n"
        "    def __init__(self):\n"
        "        self.total = 0\n"
        "    def add(self, v):\n"
        "        self.total += v\n"
        "        return self\n"
        "Acc().add(2).add(3).total",
        "5",
    ),
    (
        "builtins",
        "(sorted(zip([3, 1, 2], 'abc')), tuple(reversed([1, 2, 3])), max([4, 9]), "
        "list(enumerate('ab')))",
        "([(1, 'b'), (2, 'c'), (3, 'a')], (3, 2, 1), 9, [(0, 'a'), (1, 'b')])",
    ),
    (
        "comprehensions",
        "([i * i for i in range(5) if i % 2 == 0], {k: len(k) for k in ['a', 'bb']}, "
        "{i % 3 for i in range(9)})",
        "([0, 4, 16], {'a': 1, 'bb': 2}, {0, 1, 2})",
    ),
    ("f-string", "v = 3.14159\nf'{v:.2f}|{v:>6.1f}|{7:03d}|{v!r}'", "'3.14|   3.1|007|3.14159'"),
    (
        "try-except-finally",
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError as e:\n"
        "    msg = f'caught {e}'\n"
        "finally:\n"
        "    done = True\n"
        "(msg, done)",
        "('caught division by zero', True)",
    ),
    ("lambda", "sorted(['bb', 'a', 'ccc'], key=lambda s: -len(s))", "['ccc', 'bb', 'a']"),
    (
        "generators",
        "def doubled(n):\n"
        "    for i in range(n):\n"
        "        yield i * 2\n"
        "(sum(doubled(4)), list(doubled(3)), sum(x for x in range(5)))",
        "(12, [0, 2, 4], 10)",
    ),
    (
        "unpacking",
        "a, (b, c) = 1, (2, 3)\nfirst, *rest = [1, 2, 3]\n(a + b + c, first, rest)",
        "(6, 1, [2, 3])",
    ),
    ("counter", "from collections import Counter\nCounter('hello').most_common(1)", "[('l', 2)]"),
    (
        "stdlib-imports",
        "import math, statistics, datetime, json, re\n"
        "(math.sqrt(16), statistics.mean([1, 2, 3]), datetime.date(2024, 1, 2).isoformat(), "
        "json.dumps({'a': 1}), re.sub('l+', 'L', 'hello'))",
        "(4.0, 2, '2024-01-02', '{\"a\": 1}', 'heLo')",
    ),
    (
        "groupby",
        "import pandas as pd\n"
        "df = pd.DataFrame({'g': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n"
        "df.groupby('g')['v'].sum().to_dict()",
        "{'a': 4, 'b': 2}",
    ),
]


@pytest.mark.parametrize(
    ("code", "expected"), [c[1:] for c in ORDINARY], ids=[c[0] for c in ORDINARY]
)
def test_ordinary_python_keeps_working(run: Run, code: str, expected: str) -> None:
    result = run(code)
    assert result["error"] is None, result["error"]
    assert result["result"] == expected


# --- the CLI ----------------------------------------------------------------------------------


def test_the_cli_reads_a_job_on_stdin_and_writes_one_result(census: dict[str, Path]) -> None:
    """A fresh process, as in the cold sandbox: plotly is first imported by the snippet and
    its figure is still captured."""
    job = {
        "code": "import plotly.express as px\n"
        "print('rows', len(df))\n"
        "fig = px.histogram(df, x='age')\n"
        "df['age'].max()",
        "datasets": [dataset(census["arrow"])],
        "limits": {"timeout_s": 30},
    }
    done = cli(job)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # one JSON document, nothing else on stdout
    check_contract(result, done.stdout, DEFAULT_MAX_OUTPUT)
    assert result["stdout"] == "rows 8\n"
    assert result["result"] == "60"
    (figure,) = result["figures"]
    assert figure["data"][0]["type"] == "histogram"


def test_a_warm_runner_says_it_is_ready_before_reading_its_job(census: dict[str, Path]) -> None:
    """`--warm`, as a container the docker backend starts ahead of its job: the libraries
    loaded and exercised, "ready" on stderr while it waits, then one job, one result,
    length-prefixed so the backend need not wait for the stream to end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "--warm"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    assert process.stdin is not None
    try:
        assert process.stderr.readline() == READY_LINE.encode()  # before any job was sent
        assert "pandas" in _loaded_modules(process.pid)
        job = {
            "code": "df.groupby('education')['age'].mean()",
            "datasets": [dataset(census["arrow"])],
        }
        out, _ = process.communicate(json.dumps(job).encode(), timeout=JOB_DEADLINE_S)
    finally:
        process.kill()
    assert process.returncode == 0
    size, _, body = out.partition(b"\n")  # framed: its length in bytes, then the result
    assert int(size) == len(body)
    result = json.loads(body)
    check_contract(result, body.decode(), DEFAULT_MAX_OUTPUT)
    assert result["ok"] is True
    assert result["tables"][0]["total_rows"] >= 1


def _loaded_modules(pid: int) -> str:
    """The shared objects mapped into a process: what it has imported that is compiled."""
    return Path(f"/proc/{pid}/maps").read_text()


def test_the_cli_reads_a_job_file(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"code": "x = 6\nx * 7"}))
    done = cli("", "--job-file", str(path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    check_contract(result, done.stdout, DEFAULT_MAX_OUTPUT)
    assert result["result"] == "42"
    assert kept(result) == {"x": {"name": "x", "kind": "value", "value": 6}}


def test_the_cli_reads_a_dataset_from_a_file_descriptor(census: dict[str, Path]) -> None:
    """How the process backend hands datasets over: `fd:N`, an open descriptor."""
    fd = os.open(census["parquet"], os.O_RDONLY)
    try:
        job = {"code": "df.shape", "datasets": [dataset(Path(f"fd:{fd}"), fmt="parquet")]}
        done = cli(job, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "(8, 3)"


def test_the_cli_writes_utf8_even_for_text_that_is_not_valid_unicode() -> None:
    """The docker and kubernetes sandboxes read the CLI's stdout: a lone surrogate in
    printed output or a kept value used to end the runner with a UnicodeEncodeError and no
    result. It comes back as U+FFFD, with a note."""
    job = {"code": "print('a\\ud800b')\nname = 'x\\udcffy'\nname"}
    done = subprocess.run(
        [sys.executable, "-m", "runner"],
        cwd=REPO,
        input=json.dumps(job).encode(),
        capture_output=True,
        timeout=JOB_DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("utf-8")  # strict: valid UTF-8
    result = json.loads(text)
    check_contract(result, text, DEFAULT_MAX_OUTPUT)
    assert result["ok"] is True
    assert result["stdout"] == "a\ufffdb\n"
    assert kept(result)["name"]["value"] == "x\ufffdy"
    assert result["result"] == "'x\\udcffy'"  # a repr escapes it: nothing to replace
    assert any("not valid Unicode" in note for note in result["notes"])


def test_the_cli_answers_invalid_json_with_a_job_error_and_exit_code_2() -> None:
    done = cli("{not json")
    assert done.returncode == 2
    result = json.loads(done.stdout)
    assert result["ok"] is False
    assert result["error"]["type"] == "JobError"
    assert result["error"]["message"].startswith("The job is not JSON: Expecting property name")
    assert result["error"]["line"] is None


def test_the_job_error_result_has_every_documented_key() -> None:
    done = cli("{not json")
    check_contract(json.loads(done.stdout), done.stdout, DEFAULT_MAX_OUTPUT)


@pytest.mark.parametrize(
    "job", ["[1]", '{"code": "1", "datasets": null}', '{"code": 5}'], ids=["list", "null", "int"]
)
def test_a_malformed_job_gets_a_job_error_result(job: str) -> None:
    done = cli(job)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["type"] == "JobError"


def test_a_graph_objects_figure_is_captured_in_a_fresh_process() -> None:
    code = "import plotly.graph_objects as go\nfig = go.Figure(go.Bar(x=['a'], y=[2]))\nfig"
    done = cli({"code": code})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] is None
    assert len(result["figures"]) == 1


def test_a_second_run_in_a_cold_process_captures_its_figures() -> None:
    code = "import plotly.express as px\nfig = px.bar(x=['a'], y=[2])"
    cold = Harness()
    try:
        first = cold.run(code)
        assert len(first["figures"]) == 1, "the first run's figure"
        second = cold.run(code)
        assert len(second["figures"]) == 1, "the second run's figure"
    finally:
        cold.close()
