"""The converter (api/ingest/convert.py), called in-process on real files: Parquet out,
column types that survive late surprises, bad rows counted, profiles a user can trust."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from time import monotonic
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.ingest.convert import BLOCK_BYTES, MAX_BAD_ROWS, convert_table, run_job
from api.ingest.profile import DISTINCT_CAP, SAMPLE_ROWS, jsonable
from api.ingest.sniff import inspect_upload
from api.ingest.tables import SourceTable, TableError
from tests.builders import LIMITS, MB, parquet_bytes, xlsx_bytes
from tests.factories import CENSUS_CSV
from worker.converter import converter_env

REPO = Path(__file__).resolve().parents[2]


def sources(tmp_path: Path, content: bytes, filename: str) -> list[SourceTable]:
    """The tables the request-side inspection finds, as the converter receives them."""
    path = tmp_path / f"upload-{uuid.uuid4().hex[:8]}"
    path.write_bytes(content)
    return inspect_upload(path, filename, len(content), hashlib.sha256(content).hexdigest(), LIMITS)


def convert(tmp_path: Path, content: bytes, filename: str) -> dict[str, Any]:
    [table] = sources(tmp_path, content, filename)
    return convert_table(table, tmp_path / "out")


def stored(tmp_path: Path) -> pa.Table:
    return pq.read_table(tmp_path / "out" / "data.parquet")


def column(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in result["profile"]["columns"] if c["name"] == name)


# --- the census frame: counts and profile -------------------------------------------------------


def test_census_csv_becomes_parquet_with_an_exact_profile(tmp_path: Path) -> None:
    result = convert(tmp_path, CENSUS_CSV, "census.csv")

    assert (result["row_count"], result["column_count"]) == (8, 4)
    out = tmp_path / "out"
    assert result["stored_bytes"] == sum(
        (out / name).stat().st_size for name in ("data.parquet", "data.arrow")
    )
    assert sorted(p.name for p in out.iterdir()) == ["data.arrow", "data.parquet"]
    # the sandbox's memory-mappable copy holds the same table, its text as large_string
    # (pandas' own string layout: converted without a copy)
    with pa.memory_map(str(out / "data.arrow")) as source:
        copy = pa.ipc.open_file(source).read_all()
    assert copy.schema.field("education").type == pa.large_string()
    assert copy.cast(stored(tmp_path).schema).equals(stored(tmp_path))
    table = stored(tmp_path)
    assert table.column_names == ["age", "income", "education", "workclass"]
    assert table.column("age").to_pylist() == [25, 30, 35, 40, 45, 50, 55, 60]

    profile = result["profile"]
    assert profile["rows"] == 8
    assert "skipped_rows" not in profile
    assert "widened_columns" not in profile
    age = column(result, "age")
    assert age["dtype"] == "int64"
    assert age["kind"] == "integer"
    assert (age["min"], age["max"], age["mean"]) == (25, 60, 42.5)
    assert age["std"] == pytest.approx(math.sqrt(1050 / 7))  # sample std of 25..60 step 5
    assert (age["nulls"], age["null_fraction"], age["distinct"]) == (0, 0.0, 8)
    assert column(result, "income")["mean"] == 69375.0

    education = column(result, "education")
    assert education["kind"] == "string"
    assert education["distinct"] == 4
    assert education["top_values"] == [
        {"value": "PhD", "count": 3},
        {"value": "BS", "count": 2},
        {"value": "MS", "count": 2},
        {"value": "HS", "count": 1},
    ]
    assert (education["min_length"], education["max_length"]) == (2, 3)
    assert "mean" not in education

    assert profile["sample_rows"] == [
        {"age": 25, "income": 30000, "education": "HS", "workclass": "Private"},
        {"age": 30, "income": 45000, "education": "BS", "workclass": "Private"},
        {"age": 35, "income": 55000, "education": "BS", "workclass": "Gov"},
        {"age": 40, "income": 65000, "education": "MS", "workclass": "Private"},
        {"age": 45, "income": 75000, "education": "MS", "workclass": "Gov"},
    ]
    assert len(profile["sample_rows"]) == SAMPLE_ROWS
    json.dumps(profile, allow_nan=False)  # storable as JSON as it is


def test_nulls_and_nan_are_both_counted_as_missing(tmp_path: Path) -> None:
    content = parquet_bytes(
        pa.table(
            {
                "x": [1.0, float("nan"), None, 4.0],
                "label": ["a", None, "a", "b"],
                "flag": [True, False, True, None],
            }
        )
    )

    result = convert(tmp_path, content, "values.parquet")

    x = column(result, "x")
    assert (x["nulls"], x["null_fraction"], x["distinct"]) == (2, 0.5, 2)
    assert (x["min"], x["max"], x["mean"]) == (1.0, 4.0, 2.5)
    assert x["std"] == pytest.approx(math.sqrt(4.5))
    label = column(result, "label")
    assert (label["nulls"], label["null_fraction"]) == (1, 0.25)
    assert label["top_values"] == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]
    flag = column(result, "flag")
    assert flag["kind"] == "boolean"
    assert flag["top_values"] == [{"value": True, "count": 2}, {"value": False, "count": 1}]
    assert result["profile"]["sample_rows"][1] == {"x": None, "label": None, "flag": False}


def test_empty_strings_in_csv_are_missing_values(tmp_path: Path) -> None:
    result = convert(tmp_path, b"a,b\n1,\n,y\n3,z\n", "gaps.csv")

    assert column(result, "a")["nulls"] == 1
    assert column(result, "b")["nulls"] == 1
    assert stored(tmp_path).to_pylist() == [
        {"a": 1, "b": None},
        {"a": None, "b": "y"},
        {"a": 3, "b": "z"},
    ]


def test_distinct_counts_are_capped(tmp_path: Path) -> None:
    rows = b"".join(b"%d,%d\n" % (i, i % 60) for i in range(DISTINCT_CAP * 2))

    result = convert(tmp_path, b"id,bucket\n" + rows, "many.csv")

    ids = column(result, "id")
    assert ids["distinct"] is None
    assert ids["distinct_at_least"] == DISTINCT_CAP
    assert "top_values" not in ids
    assert (ids["min"], ids["max"], ids["mean"]) == (0, 19_999, 9_999.5)
    bucket = column(result, "bucket")
    assert bucket["distinct"] == 60
    assert "distinct_at_least" not in bucket
    assert "top_values" not in bucket  # numbers with more than 50 values: no top list


def test_datetime_and_date_columns_get_iso_bounds(tmp_path: Path) -> None:
    content = (
        b"at,day,n\n"
        b"2024-03-01 10:00:00,2024-03-01,1\n"
        b"2023-12-31 23:59:59,2023-12-31,2\n"
        b"2024-02-29 12:30:00,2024-02-29,3\n"
    )

    result = convert(tmp_path, content, "events.csv")

    at = column(result, "at")
    assert (at["kind"], at["min"], at["max"]) == (
        "datetime",
        "2023-12-31T23:59:59",
        "2024-03-01T10:00:00",
    )
    assert "mean" not in at
    day = column(result, "day")
    assert (day["kind"], day["min"], day["max"]) == ("date", "2023-12-31", "2024-03-01")
    assert result["profile"]["sample_rows"][0]["at"] == "2024-03-01T10:00:00"


# --- encodings reach the stored data ----------------------------------------------------------

ACCENTED = "prénom,ville\nRené,Zürich\nJosé,Genève\nAnaïs,Besançon\n"
ACCENTED_ROWS = [
    {"prénom": "René", "ville": "Zürich"},
    {"prénom": "José", "ville": "Genève"},
    {"prénom": "Anaïs", "ville": "Besançon"},
]


@pytest.mark.parametrize(
    "content",
    [
        ACCENTED.encode("cp1252"),
        ACCENTED.encode("latin-1"),
        ACCENTED.encode("utf-16"),
        b"\xef\xbb\xbf" + ACCENTED.encode(),
    ],
    ids=["cp1252", "latin-1", "utf-16", "utf-8-bom"],
)
def test_accented_text_is_stored_right(tmp_path: Path, content: bytes) -> None:
    convert(tmp_path, content, "people.csv")

    assert stored(tmp_path).to_pylist() == ACCENTED_ROWS


def test_european_semicolon_file_keeps_decimal_commas_as_text(tmp_path: Path) -> None:
    content = b"produkt;preis\nApfel;1,50\nBirne;2,25\n"

    result = convert(tmp_path, content, "preise.csv")

    assert stored(tmp_path).to_pylist() == [
        {"produkt": "Apfel", "preis": "1,50"},
        {"produkt": "Birne", "preis": "2,25"},
    ]
    assert result["column_count"] == 2


# --- type widening ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_late_value_widens_its_column_and_the_file_is_read_again(tmp_path: Path) -> None:
    # More than one 16 MB block of integers, then a row where `amount` is text and `ratio`
    # has a fraction: Arrow inferred int64 for both from the first block.
    rows = 1_400_000
    body = b"".join(b"%d,%d,%d\n" % (i, i % 1000, i % 7) for i in range(rows))
    content = b"id,amount,ratio\n" + body + b"%d,unknown,2.5\n" % rows
    assert len(content) > BLOCK_BYTES + MB
    path = tmp_path / "big.csv"
    path.write_bytes(content)
    [table] = inspect_upload(path, "big.csv", len(content), "0" * 64, LIMITS)

    result = convert_table(table, tmp_path / "out")

    assert result["row_count"] == rows + 1
    assert result["profile"]["widened_columns"] == {"amount": "string", "ratio": "double"}
    data = stored(tmp_path)
    assert data.schema.field("id").type == pa.int64()
    assert data.schema.field("amount").type == pa.string()
    assert data.schema.field("ratio").type == pa.float64()
    assert data.slice(rows - 1).to_pylist() == [
        {"id": rows - 1, "amount": str((rows - 1) % 1000), "ratio": float((rows - 1) % 7)},
        {"id": rows, "amount": "unknown", "ratio": 2.5},
    ]
    amount = column(result, "amount")
    assert amount["kind"] == "string"
    assert amount["distinct"] == 1001
    ratio = column(result, "ratio")
    assert (ratio["kind"], ratio["min"], ratio["max"]) == ("float", 0.0, 6.0)
    assert ratio["mean"] == pytest.approx((sum(i % 7 for i in range(rows)) + 2.5) / (rows + 1))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.arrow", "data.parquet"]


# --- bad rows -----------------------------------------------------------------------------------


def test_ragged_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    content = b"a,b\n1,x\n2\n3,y\n4,z,extra\n5,w\n"

    result = convert(tmp_path, content, "ragged.csv")

    assert result["row_count"] == 3
    assert result["profile"]["skipped_rows"] == 2
    assert stored(tmp_path).to_pylist() == [
        {"a": 1, "b": "x"},
        {"a": 3, "b": "y"},
        {"a": 5, "b": "w"},
    ]


def test_up_to_the_bad_row_limit_is_tolerated(tmp_path: Path) -> None:
    content = b"a,b\n" + b"1,x\n2\n" * MAX_BAD_ROWS

    result = convert(tmp_path, content, "ragged.csv")

    assert result["row_count"] == MAX_BAD_ROWS
    assert result["profile"]["skipped_rows"] == MAX_BAD_ROWS


def test_one_bad_row_over_the_limit_fails_with_a_clear_message(tmp_path: Path) -> None:
    content = b"a,b\n" + b"1,x\n2\n" * (MAX_BAD_ROWS + 1)
    [table] = sources(tmp_path, content, "ragged.csv")

    with pytest.raises(TableError) as caught:
        convert_table(table, tmp_path / "out")

    assert str(caught.value) == (
        f"More than {MAX_BAD_ROWS} rows have the wrong number of fields "
        "(Expected 2 columns, got 1: 2)"
    )
    assert not (tmp_path / "out" / "data.parquet").exists()


# --- other formats ------------------------------------------------------------------------------


def test_nested_json_is_flattened_to_dotted_columns(tmp_path: Path) -> None:
    document = [
        {"id": 1, "user": {"name": "Ada", "address": {"city": "London"}}},
        {"id": 2, "user": {"name": "Grace", "address": {"city": "Arlington"}}},
    ]

    result = convert(tmp_path, json.dumps(document).encode(), "users.json")

    data = stored(tmp_path)
    assert sorted(data.column_names) == ["id", "user.address.city", "user.name"]
    assert result["column_count"] == 3
    assert data.select(["id", "user.name", "user.address.city"]).to_pylist() == [
        {"id": 1, "user.name": "Ada", "user.address.city": "London"},
        {"id": 2, "user.name": "Grace", "user.address.city": "Arlington"},
    ]


def test_nested_json_lines_are_flattened_too(tmp_path: Path) -> None:
    content = (
        b'{"id": 1, "geo": {"lat": 51.5, "lon": -0.1}}\n'
        b'{"id": 2, "geo": {"lat": 38.9, "lon": -77.0}}\n'
    )

    convert(tmp_path, content, "points.jsonl")

    assert stored(tmp_path).to_pylist() == [
        {"id": 1, "geo.lat": 51.5, "geo.lon": -0.1},
        {"id": 2, "geo.lat": 38.9, "geo.lon": -77.0},
    ]


@pytest.mark.parametrize(
    "document",
    [
        {"age": [25, 30], "name": ["a", "b"]},
        {"data": [{"age": 25, "name": "a"}, {"age": 30, "name": "b"}]},
    ],
    ids=["object-of-columns", "data-wrapper"],
)
def test_json_document_shapes_give_the_same_rows(tmp_path: Path, document: Any) -> None:
    result = convert(tmp_path, json.dumps(document).encode(), "rows.json")

    assert result["row_count"] == 2
    assert stored(tmp_path).to_pylist() == [{"age": 25, "name": "a"}, {"age": 30, "name": "b"}]


def test_invalid_json_lines_fail_with_a_message(tmp_path: Path) -> None:
    [table] = sources(tmp_path, b'{"a": 1}\n{"a": 2\n{"a": 3}\n', "broken.jsonl")

    with pytest.raises(TableError) as caught:
        convert_table(table, tmp_path / "out")

    assert str(caught.value).startswith("Invalid JSON Lines: ")


def test_mixed_type_excel_column_becomes_strings(tmp_path: Path) -> None:
    content = xlsx_bytes(
        {
            "Mixed": [
                ["id", "value", "note"],
                [1, 1, "x"],
                [2, "two", None],
                [3, 3.5, None],
                [None, None, None],
            ]
        }
    )

    result = convert(tmp_path, content, "mixed.xlsx")

    assert result["row_count"] == 3  # the all-empty row is dropped
    data = stored(tmp_path)
    assert data.schema.field("id").type == pa.int64()
    assert pa.types.is_string(data.schema.field("value").type) or pa.types.is_large_string(
        data.schema.field("value").type
    )
    assert data.to_pylist() == [
        {"id": 1, "value": "1", "note": "x"},
        {"id": 2, "value": "two", "note": None},
        {"id": 3, "value": "3.5", "note": None},
    ]
    assert column(result, "note")["nulls"] == 2


def test_excel_sheets_convert_separately_with_their_header_names(tmp_path: Path) -> None:
    content = xlsx_bytes(
        {
            "Sales": [["region", "amount", "amount"], ["north", 10, 1], ["south", 20, 2]],
            "Costs": [["item", "cost"], ["rent", 500], ["power", 80]],
        }
    )
    sales, costs = sources(tmp_path, content, "book.xlsx")

    sales_result = convert_table(sales, tmp_path / "sales")
    costs_result = convert_table(costs, tmp_path / "costs")

    assert pq.read_table(tmp_path / "sales" / "data.parquet").to_pylist() == [
        {"region": "north", "amount": 10, "amount_2": 1},
        {"region": "south", "amount": 20, "amount_2": 2},
    ]
    assert pq.read_table(tmp_path / "costs" / "data.parquet").to_pylist() == [
        {"item": "rent", "cost": 500},
        {"item": "power", "cost": 80},
    ]
    assert (sales_result["row_count"], costs_result["row_count"]) == (2, 2)


def test_excel_datetimes_are_timestamps(tmp_path: Path) -> None:
    content = xlsx_bytes(
        {"S": [["when", "n"], [datetime(2024, 1, 2, 3, 4, 5), 1], [datetime(2024, 5, 6), 2]]}
    )

    result = convert(tmp_path, content, "dates.xlsx")

    when = column(result, "when")
    assert when["kind"] == "datetime"
    assert (when["min"], when["max"]) == ("2024-01-02T03:04:05", "2024-05-06T00:00:00")


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (
            parquet_bytes(pa.table({"x": pa.array([], pa.int64())})),
            "empty.parquet",
            "The table has no data rows.",
        ),
        (
            xlsx_bytes({"Only": [["a", "b"], [None, None]]}),
            "header.xlsx",
            "Sheet 'Only' has a header but no data rows.",
        ),
    ],
    ids=["parquet", "xlsx"],
)
def test_a_table_without_rows_fails(
    tmp_path: Path, content: bytes, filename: str, message: str
) -> None:
    [table] = sources(tmp_path, content, filename)

    with pytest.raises(TableError) as caught:
        convert_table(table, tmp_path / "out")

    assert str(caught.value) == message
    assert list((tmp_path / "out").iterdir()) == []


def test_a_header_only_csv_fails_in_the_converter_too(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(b"a,b\n")
    table = SourceTable(
        name="header",
        format="csv",
        path=str(path),
        size=4,
        sha256="0" * 64,
        encoding="utf8",
        delimiter=",",
        columns=["a", "b"],
    )

    with pytest.raises(TableError) as caught:
        convert_table(table, tmp_path / "out")

    assert str(caught.value) == "The table has no data rows."
    assert list((tmp_path / "out").iterdir()) == []


def test_parquet_duplicate_and_blank_column_names_are_cleaned(tmp_path: Path) -> None:
    arrow = pa.Table.from_arrays([pa.array([1]), pa.array([2]), pa.array([3])], ["a", "a", " "])

    result = convert(tmp_path, parquet_bytes(arrow), "dupes.parquet")

    assert stored(tmp_path).column_names == ["a", "a_2", "column_3"]
    assert [c["name"] for c in result["profile"]["columns"]] == ["a", "a_2", "column_3"]


def test_parquet_categoricals_with_a_new_dictionary_per_row_group_are_kept(tmp_path: Path) -> None:
    """The Arrow IPC copy holds one dictionary per column; pandas categoricals saved to
    Parquet come back with one per row group."""
    first = pa.table({"c": pa.array(["a", "b"] * 40_000).dictionary_encode()})
    second = pa.table({"c": pa.array(["z", "y"] * 40_000).dictionary_encode()})
    path = tmp_path / "categories.parquet"
    with pq.ParquetWriter(path, first.schema) as writer:
        writer.write_table(first)
        writer.write_table(second)
    [table] = sources(tmp_path, path.read_bytes(), "categories.parquet")

    result = convert_table(table, tmp_path / "out")

    assert result["row_count"] == 160_000
    with pa.memory_map(str(tmp_path / "out" / "data.arrow")) as source:
        arrow = pa.ipc.open_file(source).read_all()
    assert arrow.schema.field("c").type == pa.large_string()
    assert arrow.column("c").value_counts().to_pylist() == [
        {"values": value, "counts": 40_000} for value in ("a", "b", "z", "y")
    ]
    assert stored(tmp_path).column("c").to_pylist() == arrow.column("c").to_pylist()


# --- run_job: the process's contract ------------------------------------------------------------


def test_run_job_reports_each_item_and_keeps_going_after_a_failure(tmp_path: Path) -> None:
    good = sources(tmp_path, CENSUS_CSV, "census.csv")[0]
    corrupt_path = tmp_path / "corrupt.parquet"
    valid = parquet_bytes(pa.table({"x": list(range(100))}))
    corrupt_path.write_bytes(valid[:4] + b"\x00" * (len(valid) - 8) + valid[-4:])
    corrupt = SourceTable(
        name="corrupt",
        format="parquet",
        path=str(corrupt_path),
        size=len(valid),
        sha256="0" * 64,
    )
    empty = sources(tmp_path, parquet_bytes(pa.table({"x": pa.array([], pa.int64())})), "e.pq")[0]
    # A workbook that stopped being one between the inspection and the conversion.
    broken_path = tmp_path / "broken.xlsx"
    broken_path.write_bytes(b"PK\x03\x04 truncated")
    broken = SourceTable(
        name="broken", format="xlsx", path=str(broken_path), size=20, sha256="0" * 64
    )
    job = {
        "items": [
            {"dataset_id": "d1", "table": good.to_json(), "out_dir": str(tmp_path / "d1")},
            {"dataset_id": "d2", "table": corrupt.to_json(), "out_dir": str(tmp_path / "d2")},
            {"dataset_id": "d3", "table": empty.to_json(), "out_dir": str(tmp_path / "d3")},
            {"dataset_id": "d4", "table": broken.to_json(), "out_dir": str(tmp_path / "d4")},
        ]
    }

    results = run_job(json.loads(json.dumps(job)))["results"]

    assert [(r["dataset_id"], r["ok"]) for r in results] == [
        ("d1", True),
        ("d2", False),
        ("d3", False),
        ("d4", False),
    ]
    assert (results[0]["row_count"], results[0]["column_count"]) == (8, 4)
    assert results[0]["profile"]["rows"] == 8
    assert results[1]["error"].startswith("Unreadable Parquet file: ")
    assert results[2]["error"] == "The table has no data rows."
    assert results[3]["error"].startswith("The file could not be read (BadZipFile: ")
    assert all(isinstance(r["seconds"], float) for r in results)
    assert (tmp_path / "d1" / "data.parquet").exists()
    json.dumps(results, allow_nan=False)


def test_the_converter_process_reads_a_job_and_writes_a_result(tmp_path: Path) -> None:
    [table] = sources(tmp_path, CENSUS_CSV, "census.csv")
    job = {
        "memory_mb": 2048,
        "items": [{"dataset_id": "x", "table": table.to_json(), "out_dir": str(tmp_path / "o")}],
    }

    done = subprocess.run(
        [sys.executable, "-m", "api.ingest.convert"],
        input=json.dumps(job).encode(),
        capture_output=True,
        env={**converter_env(), "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr.decode()
    [result] = json.loads(done.stdout)["results"]
    assert (result["ok"], result["row_count"], result["column_count"]) == (True, 8, 4)
    assert pq.read_table(tmp_path / "o" / "data.parquet").num_rows == 8


def test_converter_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db/quarry")
    monkeypatch.setenv("JWT_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    env = converter_env()

    assert not {"DATABASE_URL", "JWT_SECRET_KEY", "OPENAI_API_KEY"} & set(env)
    assert env["ARROW_DEFAULT_MEMORY_POOL"] == "system"


# --- jsonable -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (7, 7),
        ("text", "text"),
        (1.5, 1.5),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        (Decimal("12.50"), 12.5),
        (Decimal("NaN"), None),
        (Decimal("Infinity"), None),
        (datetime(2024, 2, 29, 13, 45, 7), "2024-02-29T13:45:07"),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00+00:00"),
        (date(2024, 2, 29), "2024-02-29"),
        (time(8, 30), "08:30:00"),
        (timedelta(hours=1, seconds=1.5), 3601.5),
        (b"\x00\xffab", base64.b64encode(b"\x00\xffab").decode()),
        (b"x" * 100, base64.b64encode(b"x" * 64).decode() + "..."),
        ({1: float("nan"), "k": [Decimal("1"), (2, b"a")]}, {"1": None, "k": [1.0, [2, "YQ=="]]}),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ],
)
def test_jsonable(value: Any, expected: Any) -> None:
    assert jsonable(value) == expected
    json.dumps(jsonable(value), allow_nan=False)


# --- hostile and odd input: nesting, width, NUL, encodings ---------------------------------------


def converter_process(tmp_path: Path, tables: list[SourceTable]) -> list[dict[str, Any]]:
    """The real converter process, as the worker runs it (worker/converter.py)."""
    job = {
        "memory_mb": 2048,
        "max_columns": LIMITS.max_columns,
        "items": [
            {"dataset_id": str(i), "table": t.to_json(), "out_dir": str(tmp_path / f"o{i}")}
            for i, t in enumerate(tables)
        ],
    }
    done = subprocess.run(
        [sys.executable, "-m", "api.ingest.convert"],
        input=json.dumps(job).encode(),
        capture_output=True,
        env={**converter_env(), "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr.decode()[-2000:])
    results: list[dict[str, Any]] = json.loads(done.stdout)["results"]
    return results


# Rows enough to push what follows past the megabyte the request inspects.
FILLER = [{"id": i, "name": f"row {i}"} for i in range(50_000)]
DEEP = 100_000


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (
            b"".join(json.dumps(r).encode() + b"\n" for r in FILLER)
            + b'{"id": 0, "name": '
            + b"[" * DEEP
            + b"]" * DEEP
            + b"}\n",
            "late.jsonl",
        ),
        (
            json.dumps(FILLER).encode()[:-1]
            + b', {"id": 0, "name": '
            + b'{"a":' * DEEP
            + b"1"
            + b"}" * DEEP
            + b"}]",
            "late.json",
        ),
    ],
    ids=["json-lines", "json-document"],
)
def test_nesting_past_the_inspected_megabyte_fails_with_its_reason(
    tmp_path: Path, content: bytes, filename: str
) -> None:
    """Arrow's JSON reader overflowed its stack (the converter died: "ran out of memory"),
    Python's raised RecursionError. The converter now checks the nesting first."""
    [table] = sources(tmp_path, content, filename)  # the request saw nothing wrong

    [result] = converter_process(tmp_path, [table])

    assert result["ok"] is False
    assert result["error"] == (
        "The file holds JSON nested more than 48 levels deep; Quarry reads at most 48. "
        "Flatten the deeply nested values (or store them as text) and upload the file again."
    )


MILLION_KEYS = {f"k{i}": i for i in range(1_000_000)}


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (
            b"".join(json.dumps(r).encode() + b"\n" for r in FILLER)
            + json.dumps(MILLION_KEYS).encode()
            + b"\n",
            "wide.jsonl",
        ),
        (json.dumps([{"a": 1}, MILLION_KEYS]).encode(), "wide.json"),
        (json.dumps({key: [1] for key in MILLION_KEYS}).encode(), "columns.json"),
    ],
    ids=["json-lines", "array-of-objects", "object-of-columns"],
)
def test_a_million_keys_in_one_object_fails_fast_with_its_reason(
    tmp_path: Path, content: bytes, filename: str
) -> None:
    """Arrow aborted (exit code 127: "stopped unexpectedly"); pandas took half a minute
    and then "ran out of memory". The width is checked before a column is built."""
    # past the first megabyte: the request cannot tell
    [table] = sources(tmp_path, content, filename)

    started = monotonic()
    [result] = converter_process(tmp_path, [table])

    assert result["ok"] is False
    assert result["error"] == (
        "The file has rows with more than 2000 keys (each becomes a column); Quarry accepts "
        "at most 2000 columns (MAX_DATASET_COLUMNS)."
    )
    assert monotonic() - started < 60  # generous: it takes a few seconds


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b'[{"text": "x\\u0000y", "k\\u0000": 1}, {"text": "z", "k\\u0000": 2}]', "rows.json"),
        (b'{"text": "x\\u0000y", "k\\u0000": 1}\n{"text": "z", "k\\u0000": 2}\n', "rows.jsonl"),
        (b"text,k\x00\nx\x00y,1\nz,2\n", "rows.csv"),
    ],
    ids=["json", "json-lines", "csv"],
)
def test_nul_characters_are_kept_in_the_data_and_named_in_the_profile(
    tmp_path: Path, content: bytes, filename: str
) -> None:
    """PostgreSQL refuses NUL in text and JSONB: a profile holding one made the worker's
    write fail, and the dataset stayed `processing` until the reaper failed it minutes later
    with "the worker stopped responding". The data keeps the NUL; the profile shows U+FFFD
    and says so; a column name loses it."""
    [table] = sources(tmp_path, content, filename)

    [result] = converter_process(tmp_path, [table])

    assert result["ok"] is True, result
    data = pq.read_table(tmp_path / "o0" / "data.parquet")
    assert data.column_names == ["text", "k"]
    assert data.column("text").to_pylist() == ["x\x00y", "z"]
    profile = result["profile"]
    assert "\\u0000" not in json.dumps(profile)
    top = next(c for c in profile["columns"] if c["name"] == "text")["top_values"]
    assert {"value": "x\ufffdy", "count": 1} in top
    assert profile["sample_rows"][0] == {"text": "x\ufffdy", "k": 1}
    assert profile["notes"] == [
        "NUL characters (U+0000) were removed from column names.",
        "Some values hold NUL characters (U+0000): the dataset keeps them as they are; this "
        "profile shows each one as U+FFFD (\ufffd).",
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252"])
def test_json_lines_in_another_encoding_convert(tmp_path: Path, encoding: str) -> None:
    """Arrow reads UTF-8 only: UTF-16 JSON Lines failed as "Invalid value", Windows-1252
    ones with a UnicodeDecodeError."""
    content = '{"city": "Zürich", "n": 1}\n{"city": "Genève", "n": 2}\n'.encode(encoding)
    [table] = sources(tmp_path, content, "cities.jsonl")

    [result] = converter_process(tmp_path, [table])

    assert result["ok"] is True, result
    data = pq.read_table(tmp_path / "o0" / "data.parquet")
    assert data.column("city").to_pylist() == ["Zürich", "Genève"]
    assert not list(tmp_path.glob("*.utf8"))  # the UTF-8 copy is gone


@pytest.mark.parametrize(
    ("content", "filename"), [(b"{}\n{}\n", "empty.jsonl"), (b"[{}, {}]", "empty.json")]
)
def test_rows_of_empty_objects_fail_with_a_reason(
    tmp_path: Path, content: bytes, filename: str
) -> None:
    [table] = sources(tmp_path, content, filename)

    [result] = converter_process(tmp_path, [table])

    assert (result["ok"], result["error"]) == (
        False,
        "The table has no columns: every row of the file is empty.",
    )


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (
            b'[{"a": "\\ud800"}]',
            "The file holds text that is not valid Unicode (an escaped lone surrogate such as "
            '"\\ud800"); correct or remove it and upload the file again.',
        ),
        (b'[{"a": 123456789012345678901234567890, "b": 1}]', None),
    ],
    ids=["lone-surrogate", "integer-over-64-bits"],
)
def test_json_values_arrow_cannot_hold_fail_with_a_reason_or_become_text(
    tmp_path: Path, content: bytes, error: str | None
) -> None:
    """Both failed as "The file could not be read (UnicodeEncodeError / OverflowError ...)"."""
    [table] = sources(tmp_path, content, "odd.json")

    [result] = converter_process(tmp_path, [table])

    if error is not None:
        assert (result["ok"], result["error"]) == (False, error)
        return
    assert result["ok"] is True, result
    data = pq.read_table(tmp_path / "o0" / "data.parquet")
    assert data.column("a").to_pylist() == ["123456789012345678901234567890"]
    assert data.column("b").to_pylist() == [1]


# --- real files found refused or misread (issue: the keyless assistant, ingestion) ------------


def _sklearn_file(name: str) -> bytes:
    import sklearn.datasets

    return (Path(sklearn.datasets.__file__).parent / "data" / name).read_bytes()


def test_a_title_line_before_headerless_numbers_is_skipped_and_the_columns_named(
    tmp_path: Path,
) -> None:
    """scikit-learn's wine_data.csv: "178,13,class_0,class_1,class_2", then 178 rows of 14
    numbers and no header. It was refused ("The table has no data rows")."""
    out = convert(tmp_path, _sklearn_file("wine_data.csv"), "wine_data.csv")
    assert (out["row_count"], out["column_count"]) == (178, 14)
    columns = out["profile"]["columns"]
    assert [c["name"] for c in columns][:2] == ["column_1", "column_2"]
    assert (columns[0]["kind"], columns[0]["min"]) == ("float", 11.03)
    assert (columns[13]["kind"], columns[13]["max"]) == ("integer", 2)
    notes = " ".join(out["profile"]["notes"])
    assert "'178,13,class_0,class_1,class_2'" in notes
    assert "no header row" in notes


def test_a_title_line_before_a_header_is_skipped(tmp_path: Path) -> None:
    content = b"Sales export 2024\nregion,amount\nnorth,10\nsouth,20\n"
    out = convert(tmp_path, content, "sales.csv")
    assert [c["name"] for c in out["profile"]["columns"]] == ["region", "amount"]
    assert out["row_count"] == 2


def test_classic_mac_line_endings_with_a_bom_are_read(tmp_path: Path) -> None:
    """Excel for Mac's "CSV UTF-8": a BOM and lines ending in a carriage return alone. It
    was refused: "has a header row but no data rows"."""
    content = b"\xef\xbb\xbfname,score\rada,3\rbob,5\r"
    out = convert(tmp_path, content, "mac.csv")
    assert out["row_count"] == 2
    assert [c["name"] for c in out["profile"]["columns"]] == ["name", "score"]


def test_fields_separated_by_single_spaces_are_columns(tmp_path: Path) -> None:
    """scikit-learn's linnerud_physiological.csv: "Weight Waist Pulse"."""
    out = convert(tmp_path, _sklearn_file("linnerud_physiological.csv"), "linnerud.csv")
    assert [c["name"] for c in out["profile"]["columns"]] == ["Weight", "Waist", "Pulse"]
    assert out["row_count"] == 20


def test_a_one_column_file_of_two_word_names_stays_one_column(tmp_path: Path) -> None:
    content = b"full name\nAda Lovelace\nAlan Turing\nGrace Hopper\n"
    out = convert(tmp_path, content, "names.csv")
    assert [c["name"] for c in out["profile"]["columns"]] == ["full name"]
    assert out["row_count"] == 3


def test_a_saved_index_column_is_marked_in_the_profile(tmp_path: Path) -> None:
    """`df.to_csv(path)` writes the index as a first column named "" (read back by pandas
    as "Unnamed: 0"): 0..n-1, a row number, not a measurement."""
    frame = pd.DataFrame({"city": ["a", "b", "c"], "sales": [5, 7, 9]})
    out = convert(tmp_path, frame.to_csv().encode(), "saved.csv")
    first, second = out["profile"]["columns"][:2]
    assert (first["name"], first.get("index")) == ("column_1", True)
    assert "index" not in second
    assert any("row number saved with the data" in n for n in out["profile"]["notes"])
    named = pd.DataFrame({"Unnamed: 0": [0, 1, 2], "x": [3, 1, 2]}).to_csv(index=False)
    assert convert(tmp_path, named.encode(), "named.csv")["profile"]["columns"][0]["index"]
    counts = pd.DataFrame({"column_1": [1, 2, 3]}).to_csv(index=False)  # 1..n: data
    assert "index" not in convert(tmp_path, counts.encode(), "n.csv")["profile"]["columns"][0]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        (b"when,x\n2012/01/01,1\n2012/01/02,2\n", datetime(2012, 1, 1)),  # vega's seattle
        (b"when,x\nJan 1 2000,1\nFeb 11 2000,2\n", datetime(2000, 1, 1)),  # vega's stocks
        (b"when,x\n31/01/2000,1\n01/02/2000,2\n", datetime(2000, 1, 31)),  # day first
        (b"when,x\n01/31/2000,1\n02/01/2000,2\n", datetime(2000, 1, 31)),  # month first
    ],
)
def test_dates_written_as_text_are_stored_as_dates(
    tmp_path: Path, text: bytes, first: datetime
) -> None:
    out = convert(tmp_path, text, "dated.csv")
    column = out["profile"]["columns"][0]
    assert column["dtype"].startswith("timestamp"), column
    assert out["profile"]["sample_rows"][0]["when"] == first.isoformat()
    assert "holds dates written as text" in " ".join(out["profile"]["notes"])
    frame = pa.ipc.open_file(str(tmp_path / "out" / "data.arrow")).read_all().to_pandas()
    assert frame["when"].iloc[0] == pd.Timestamp(first)


def test_dates_that_read_both_ways_or_stop_being_dates_stay_text(tmp_path: Path) -> None:
    ambiguous = convert(tmp_path, b"when,x\n01/02/2000,1\n03/04/2000,2\n", "a.csv")
    assert ambiguous["profile"]["columns"][0]["kind"] == "string"
    assert "reads both day-first and month-first" in " ".join(ambiguous["profile"]["notes"])
    # a value past the sniffer's sample that is not a date: the whole column stays text
    rows = b"".join(b"2012/01/%02d,%d\n" % (1 + i % 28, i) for i in range(5000))
    broken = convert(tmp_path, b"when,x\n" + rows + b"not a date,1\n", "b.csv")
    assert broken["profile"]["columns"][0]["kind"] == "string"
    assert broken["row_count"] == 5001


def test_dates_in_a_json_document_are_stored_as_dates(tmp_path: Path) -> None:
    document = json.dumps([{"Year": "1970-01-01", "n": 1}, {"Year": "1971-01-01", "n": 2}])
    out = convert(tmp_path, document.encode(), "cars.json")
    assert out["profile"]["columns"][0]["dtype"].startswith("timestamp")


def test_rows_that_never_match_the_header_say_so(tmp_path: Path) -> None:
    with pytest.raises(TableError) as caught:
        convert(tmp_path, b"a,b\n" + b"1,2,3,4\n" * 50, "ragged.csv")
    assert str(caught.value).startswith(
        "None of the rows has the header's 2 fields (all 50 read were skipped)"
    )
