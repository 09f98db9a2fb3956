"""A sandbox's result is untrusted input.

The runner inside a sandbox is the snippet's neighbour: a snippet that got past the language
layer can make it say anything. So the worker reads a result as it would a request body:
the shape of DESIGN.md ("Runner job and result") and nothing else, every type checked,
every text and list bounded, workspace names identifiers, figures Plotly's {data, layout}.
A result that is not one is refused whole — the user sees that the sandbox returned an
invalid result, never a part of one — and what a forged result may still say within these
bounds reaches the database and the UI as data only (stored as JSON, rendered as text,
tables and Plotly figures).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, ValidationError

# Bounds a real runner never reaches (runner/capture.py, runner/data.py keep well inside).
MAX_TEXT = 256 << 20  # the largest output cap (SANDBOX_MAX_OUTPUT_MB); the read is capped too
MAX_TABLES = 200
MAX_FIGURES = 20  # capture.Figures keeps the first 20
MAX_TABLE_COLUMNS = 100
MAX_TABLE_ROWS = 200
MAX_NOTES = 50
MAX_WORKSPACE = 1000

# an identifier not starting with "_" (Unicode letters too: `größe = 3`), never a path
Name = Annotated[str, StringConstraints(pattern=r"^[^\W\d_]\w*$", max_length=500)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Error(Strict):
    type: Annotated[str, StringConstraints(pattern=r"^[^\W\d][\w.]*$", max_length=500)]
    message: Annotated[str, StringConstraints(max_length=20_000)]
    line: Annotated[int, Field(ge=0, le=10_000_000)] | None


class Table(Strict):
    name: Text
    columns: Annotated[list[Text], Field(max_length=MAX_TABLE_COLUMNS)]
    rows: Annotated[
        list[Annotated[list[JsonValue], Field(max_length=MAX_TABLE_COLUMNS)]],
        Field(max_length=MAX_TABLE_ROWS),
    ]
    truncated: bool
    total_rows: Annotated[int, Field(ge=0)]
    total_columns: Annotated[int, Field(ge=0)]


class Figure(BaseModel):
    """Plotly's figure JSON: a list of traces and a layout (each checked by Plotly.js when
    drawn; here only that they are what they say)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    data: Annotated[list[dict[str, JsonValue]], Field(max_length=10_000)]
    layout: dict[str, JsonValue]


class DataFrameEntry(Strict):
    name: Name
    kind: Literal["dataframe"]
    arrow: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/=]*$")]
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]
    columns: Annotated[list[Text], Field(max_length=100_000)]
    series: bool
    size: Annotated[int, Field(ge=0)] | None = None


class ValueEntry(Strict):
    name: Name
    kind: Literal["value"]
    value: JsonValue
    size: Annotated[int, Field(ge=0)] | None = None


class Result(Strict):
    """Keys a runner of another version may leave out default to nothing shown."""

    ok: bool
    stdout: Text = ""
    error: Error | None = None
    result: Annotated[str, StringConstraints(max_length=1 << 20)] | None = None
    tables: Annotated[list[Table], Field(max_length=MAX_TABLES)] = []
    figures: Annotated[list[Figure], Field(max_length=MAX_FIGURES)] = []
    workspace: Annotated[
        list[Annotated[DataFrameEntry | ValueEntry, Field(discriminator="kind")]],
        Field(max_length=MAX_WORKSPACE),
    ] = []
    notes: Annotated[
        list[Annotated[str, StringConstraints(max_length=5000)]], Field(max_length=MAX_NOTES)
    ] = []
    duration_ms: Annotated[int, Field(ge=0)] = 0


def problem(result: dict[str, Any]) -> str | None:
    """Why `result` is not a result, in a few words (None when it is one)."""
    try:
        Result.model_validate(result)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][:4]) or "the result"
        return f"{where}: {first['msg']}"[:300]
    if result["ok"] == (result.get("error") is not None):
        return "ok and error disagree"
    return None
