"""Datasets through the HTTP API: upload every supported format, inspect, preview, download,
rename, delete; refused uploads leave nothing behind; conversions that fail, time out, are
deleted midway or are cut short by a shutdown end in a clear state. Real PostgreSQL, real
files under data_dir, real converter subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.config import Settings
from api.errors import APIError
from api.ingest.upload import UPLOAD_TIMEOUT_S, receive_upload
from api.main import create_app
from api.models import Dataset
from api.queue import CONVERT_UPLOAD
from api.storage import remove_tree, staging_dir
from tests.builders import MB, parquet_bytes, xlsx_bytes, zip_bomb_bytes, zip_bytes
from tests.conftest import make_settings
from tests.factories import CENSUS_CSV, Client, User
from worker.datasets import STAGING_ABANDONED_AFTER_S, claim, convert_upload, reap, settle

# build(**settings_overrides) -> a started Client on its own app (closed at the end)
Build = Callable[..., Client]


# --- files ------------------------------------------------------------------------------------


def _biff(kind: int, data: bytes) -> bytes:
    return struct.pack("<HH", kind, len(data)) + data


def _biff_bof(substream: int) -> bytes:
    return _biff(0x0809, struct.pack("<HHHHII", 0x0600, substream, 0x0DBB, 0x07CC, 0, 6))


def _biff_sheet(rows: list[list[Any]]) -> bytes:
    width = max((len(r) for r in rows), default=0)
    body = _biff_bof(0x0010) + _biff(0x0200, struct.pack("<IIHHH", 0, len(rows), 0, width, 0))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, str):  # LABEL, uncompressed UTF-16
                text = struct.pack("<HHHHB", r, c, 0, len(value), 1) + value.encode("utf-16-le")
                body += _biff(0x0204, text)
            elif value is not None:  # NUMBER
                body += _biff(0x0203, struct.pack("<HHHd", r, c, 0, float(value)))
    return body + _biff(0x000A, b"")


def xls_bytes(sheets: dict[str, list[list[Any]]]) -> bytes:
    """A minimal Excel 97-2003 workbook: BIFF8 records (BOF, CODEPAGE, one XF, BOUNDSHEETs,
    LABEL/NUMBER cells) in an OLE2 compound file with one FAT sector and no mini stream."""
    head = _biff_bof(0x0005) + _biff(0x0042, struct.pack("<H", 1200)) + _biff(0x00E0, bytes(20))
    bodies = [_biff_sheet(rows) for rows in sheets.values()]

    def boundsheets(offsets: list[int]) -> bytes:
        return b"".join(
            _biff(0x0085, struct.pack("<IBBBB", at, 0, 0, len(name), 1) + name.encode("utf-16-le"))
            for name, at in zip(sheets, offsets, strict=True)
        )

    at = len(head) + len(boundsheets([0] * len(sheets))) + 4
    offsets = []
    for body in bodies:
        offsets.append(at)
        at += len(body)
    stream = head + boundsheets(offsets) + _biff(0x000A, b"") + b"".join(bodies)
    stream = stream.ljust(max(4096, -(-len(stream) // 512) * 512), b"\x00")
    sectors = len(stream) // 512
    end, free, fat_sector = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    fat = [fat_sector, end, *range(3, 2 + sectors), end]
    fat += [free] * (128 - len(fat))
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
    header += struct.pack("<HHHHH", 0x003E, 0x0003, 0xFFFE, 9, 6) + bytes(6)
    header += struct.pack("<9I", 0, 1, 1, 0, 0x1000, end, 0, end, 0)
    header += struct.pack("<I", 0) + struct.pack("<I", free) * 108

    def entry(name: str, kind: int, child: int, start: int, size: int) -> bytes:
        encoded = name.encode("utf-16-le") + b"\x00\x00" if name else b""
        return (
            encoded.ljust(64, b"\x00")
            + struct.pack("<HBB", len(encoded), kind, 1)
            + struct.pack("<III", free, free, child)
            + bytes(36)
            + struct.pack("<IQ", start, size)
        )

    directory = (
        entry("Root Entry", 5, 1, end, 0)
        + entry("Workbook", 2, free, 2, len(stream))
        + entry("", 0, free, 0, 0) * 2
    )
    return header + struct.pack("<128I", *fat) + directory + stream


def slow_xlsx(rows: int = 20_000) -> bytes:
    """A workbook that is quick to make (raw XML) and takes the converter seconds to read."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006"
    header = "".join(f'<c r="{c}1" t="inlineStr"><is><t>{c.lower()}</t></is></c>' for c in "ABCD")
    cells = "".join(
        f'<row r="{r}"><c r="A{r}"><v>{r}</v></c><c r="B{r}"><v>{r * 3}</v></c>'
        f'<c r="C{r}"><v>{r % 97}</v></c><c r="D{r}"><v>{r / 4}</v></c></row>'
        for r in range(2, rows + 2)
    )
    office = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    parts = {
        "[Content_Types].xml": (
            f'<Types xmlns="{pkg}/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{office}.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            f'ContentType="{office}.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{pkg}/relationships"><Relationship Id="rId1" '
            f'Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{main}" xmlns:r="{rel}">'
            '<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{pkg}/relationships"><Relationship Id="rId1" '
            f'Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{main}"><sheetData><row r="1">{header}</row>{cells}'
            "</sheetData></worksheet>"
        ),
    }
    return zip_bytes(list(parts.items()))


@pytest.fixture(scope="module")
def slow_workbook() -> bytes:
    return slow_xlsx()


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    return zip_bomb_bytes()


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def build(data_dir: Path, pg_url: str) -> Iterator[Build]:
    """Starts an app with settings overrides; shuts it down at the end of the test."""
    started: list[TestClient] = []

    def start(**overrides: Any) -> Client:
        test_client = TestClient(create_app(make_settings(data_dir, pg_url, **overrides)))
        test_client.__enter__()
        started.append(test_client)
        return Client(test_client)

    yield start
    for test_client in started:
        test_client.__exit__(None, None, None)


def post_file(client: Client, user: User, content: bytes, filename: str, **fields: str) -> Response:
    return client.post(
        "/api/datasets",
        headers=user.headers,
        files={"file": (filename, content, "application/octet-stream")},
        data=fields or None,
    )


def upload_all_ready(
    client: Client, user: User, content: bytes, filename: str, **fields: str
) -> list[dict[str, Any]]:
    response = post_file(client, user, content, filename, **fields)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    assert {d["status"] for d in body["data"]} == {"processing"}
    done = [client.wait_dataset(user, d["id"]) for d in body["data"]]
    for dataset in done:
        assert dataset["status"] == "ready", dataset
        assert dataset["error"] is None
    return done


def upload_one(client: Client, user: User, content: bytes, filename: str) -> dict[str, Any]:
    [dataset] = upload_all_ready(client, user, content, filename)
    return dataset


def assert_error(response: Response, status: int, code: str, message: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert {"code", "message", "request_id"} <= set(error)
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert isinstance(error["message"], str)
    assert error["message"]
    if message is not None:
        assert error["message"] == message
    return str(error["message"])


def dataset_rows(engine: Engine, user: User) -> list[Dataset]:
    with Session(engine) as db:
        return list(db.scalars(select(Dataset).where(Dataset.user_id == uuid.UUID(user.id))).all())


def files_under(path: Path) -> list[Path]:
    # os.walk, not rglob: it tolerates folders vanishing while it looks (a clean-up racing).
    return sorted(Path(root, name) for root, _, names in os.walk(path) for name in names)


def dataset_path(data_dir: Path, user: User, dataset_id: str) -> Path:
    return data_dir / "datasets" / uuid.UUID(user.id).hex / uuid.UUID(dataset_id).hex


def assert_nothing_stored(engine: Engine, data_dir: Path, user: User) -> None:
    assert dataset_rows(engine, user) == []
    assert files_under(data_dir / "datasets") == []
    assert list((data_dir / "uploads").glob("*")) == []  # no staging folder left either
    assert files_under(data_dir) == []


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def staging_removed(data_dir: Path) -> None:
    """The worker removes an upload's staging folder right after settling its datasets: a
    test that saw `failed` may look in between (in a full run inside compose, on a loaded
    machine, `uploads/<id>/upload` was seen there once), so it waits for the removal."""
    wait_until(lambda: list((data_dir / "uploads").iterdir()) == [], timeout=30)


def converter_pids() -> list[int]:
    """Converter processes started by this test process."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = stat.rsplit(")", 1)[1].split()[1]
        if parent == me and b"api.ingest.convert" in cmdline:
            found.append(int(entry.name))
    return found


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# --- every format, end to end -----------------------------------------------------------------

LATIN = "nom;ville;note\nRené;Zürich;très bien\nJosé;Genève;sehr gut\nAnaïs;Besançon;bien\n"


@pytest.mark.parametrize(
    ("filename", "content", "fmt", "shape", "encoding", "delimiter"),
    [
        ("census.csv", CENSUS_CSV, "csv", (8, 4), "utf8", ","),
        ("census.tsv", CENSUS_CSV.replace(b",", b"\t"), "tsv", (8, 4), "utf8", "\t"),
        ("preise.csv", b"produkt;preis\nApfel;1,50\nBirne;2,25\n", "csv", (2, 2), "utf8", ";"),
        ("staedte.csv", LATIN.encode("latin-1"), "csv", (3, 3), "cp1252", ";"),
        ("staedte16.csv", LATIN.encode("utf-16"), "csv", (3, 3), "utf-16", ";"),
        (
            "rows.json",
            json.dumps([{"a": i, "b": f"x{i}"} for i in range(5)]).encode(),
            "json",
            (5, 2),
            None,
            None,
        ),
        (
            "events.jsonl",
            b'{"a": 1, "b": {"c": 2}}\n{"a": 3, "b": {"c": 4}}\n',
            "jsonl",
            (2, 2),
            None,
            None,
        ),
        (
            "people.parquet",
            parquet_bytes(pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]})),
            "parquet",
            (3, 2),
            None,
            None,
        ),
    ],
    ids=["csv", "tsv", "semicolon", "latin-1", "utf-16", "json", "jsonl", "parquet"],
)
def test_single_table_formats_reach_ready(
    client: Client,
    data_dir: Path,
    filename: str,
    content: bytes,
    fmt: str,
    shape: tuple[int, int],
    encoding: str | None,
    delimiter: str | None,
) -> None:
    user = client.user()

    dataset = upload_one(client, user, content, filename)

    assert (dataset["row_count"], dataset["column_count"]) == shape
    assert dataset["source_format"] == fmt
    assert (dataset["encoding"], dataset["delimiter"]) == (encoding, delimiter)
    assert dataset["name"] == filename.rsplit(".", 1)[0]
    assert dataset["original_filename"] == filename
    assert dataset["size_bytes"] == len(content)
    assert dataset["stored_bytes"] > 0
    assert dataset["ready_at"] is not None
    assert dataset["profile"]["rows"] == shape[0]
    stored = dataset_path(data_dir, user, dataset["id"]) / "data.parquet"
    assert pq.read_metadata(stored).num_rows == shape[0]
    staging_removed(data_dir)


def test_latin1_values_come_back_right(client: Client) -> None:
    user = client.user()
    dataset = upload_one(client, user, LATIN.encode("cp1252"), "staedte.csv")

    preview = client.get(f"/api/datasets/{dataset['id']}/preview", headers=user.headers).json()

    assert preview["rows"] == [
        {"nom": "René", "ville": "Zürich", "note": "très bien"},
        {"nom": "José", "ville": "Genève", "note": "sehr gut"},
        {"nom": "Anaïs", "ville": "Besançon", "note": "bien"},
    ]


def test_xlsx_sheets_become_one_dataset_each(client: Client) -> None:
    user = client.user()
    content = xlsx_bytes(
        {
            "Sales": [["region", "amount"], ["north", 10], ["south", 20], ["east", 5]],
            "Notes": [],
            "Costs": [["item", "cost"], ["rent", 500], ["power", 80]],
        }
    )

    sales, costs = upload_all_ready(client, user, content, "Budget.xlsx")

    assert (sales["name"], sales["sheet_name"], sales["source_format"]) == (
        "Budget - Sales",
        "Sales",
        "xlsx",
    )
    assert (sales["row_count"], sales["column_count"]) == (3, 2)
    assert (costs["name"], costs["sheet_name"]) == ("Budget - Costs", "Costs")
    assert (costs["row_count"], costs["column_count"]) == (2, 2)
    assert sales["sha256"] == costs["sha256"]
    preview = client.get(f"/api/datasets/{costs['id']}/preview", headers=user.headers).json()
    assert preview["rows"] == [{"item": "rent", "cost": 500}, {"item": "power", "cost": 80}]


def test_xls_sheets_become_one_dataset_each(client: Client) -> None:
    user = client.user()
    content = xls_bytes(
        {
            "People": [
                ["name", "age", "city"],
                ["Ada", 36, "London"],
                ["Grace", 85.5, "Arlington"],
            ],
            "Empty": [],
            "Counts": [["n"], [1], [2], [3], [4]],
        }
    )

    people, counts = upload_all_ready(client, user, content, "legacy.xls")

    assert (people["name"], people["source_format"], people["sheet_name"]) == (
        "legacy - People",
        "xls",
        "People",
    )
    assert (people["row_count"], people["column_count"]) == (2, 3)
    assert (counts["name"], counts["row_count"], counts["column_count"]) == (
        "legacy - Counts",
        4,
        1,
    )
    preview = client.get(f"/api/datasets/{people['id']}/preview", headers=user.headers).json()
    assert preview["rows"] == [
        {"name": "Ada", "age": 36.0, "city": "London"},
        {"name": "Grace", "age": 85.5, "city": "Arlington"},
    ]


def test_zip_members_become_datasets_and_junk_is_ignored(client: Client, data_dir: Path) -> None:
    user = client.user()
    content = zip_bytes(
        [
            ("export/", b""),
            ("export/census.csv", CENSUS_CSV),
            ("__MACOSX/export/._census.csv", b"\x00\x05\x16\x07 resource fork"),
            ("export/.DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("export/points.jsonl", b'{"x": 1}\n{"x": 2}\n{"x": 3}\n'),
        ]
    )

    census, points = upload_all_ready(client, user, content, "export.zip")

    assert (census["name"], census["archive_member"], census["original_filename"]) == (
        "census",
        "export/census.csv",
        "export.zip",
    )
    assert (census["row_count"], census["column_count"]) == (8, 4)
    assert (points["name"], points["archive_member"], points["source_format"]) == (
        "points",
        "export/points.jsonl",
        "jsonl",
    )
    assert (points["row_count"], points["column_count"]) == (3, 1)
    staging_removed(data_dir)
    assert [p.name for p in files_under(data_dir)] == ["data.arrow", "data.parquet"] * 2


def test_name_and_description_fields_are_used(client: Client) -> None:
    user = client.user()

    [dataset] = upload_all_ready(
        client, user, CENSUS_CSV, "census.csv", name="  Census 2024 ", description="From the exam"
    )

    assert (dataset["name"], dataset["description"]) == ("Census 2024", "From the exam")


# --- listing and details ----------------------------------------------------------------------


def test_list_is_paginated_newest_first_and_filters_by_status(client: Client) -> None:
    user = client.user()
    first = client.ready_dataset(user, CENSUS_CSV, "first.csv")
    [broken] = client.upload(user, b"a,b\n1,2\n" + b"3\n" * 1500, "broken.csv")["data"]
    assert client.wait_dataset(user, broken["id"])["status"] == "failed"
    third = client.ready_dataset(user, CENSUS_CSV, "third.csv")
    other = client.user()
    client.ready_dataset(other, CENSUS_CSV, "someone-elses.csv")

    page = client.get("/api/datasets?limit=2", headers=user.headers).json()
    rest = client.get("/api/datasets?limit=2&offset=2", headers=user.headers).json()
    failed = client.get("/api/datasets?status=failed", headers=user.headers).json()
    ready = client.get("/api/datasets?status=ready", headers=user.headers).json()

    assert (page["count"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [d["id"] for d in page["data"]] == [third["id"], broken["id"]]
    assert (rest["count"], rest["limit"], rest["offset"]) == (3, 2, 2)
    assert [d["id"] for d in rest["data"]] == [first["id"]]
    assert "profile" not in page["data"][0]
    assert [d["id"] for d in failed["data"]] == [broken["id"]]
    assert failed["count"] == 1
    assert [d["id"] for d in ready["data"]] == [third["id"], first["id"]]
    bad = client.get("/api/datasets?status=bogus", headers=user.headers)
    assert_error(bad, 422, "validation_error")
    assert_error(client.get("/api/datasets?limit=0", headers=user.headers), 422, "validation_error")


def test_detail_has_the_profile(client: Client) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)

    detail = client.get(f"/api/datasets/{dataset['id']}", headers=user.headers).json()

    assert detail["status"] == "ready"
    assert (detail["row_count"], detail["column_count"]) == (8, 4)
    profile = detail["profile"]
    assert profile["rows"] == 8
    assert [c["name"] for c in profile["columns"]] == ["age", "income", "education", "workclass"]
    age = profile["columns"][0]
    assert (age["min"], age["max"], age["mean"], age["nulls"]) == (25, 60, 42.5, 0)
    assert profile["columns"][2]["top_values"][0] == {"value": "PhD", "count": 3}
    assert len(profile["sample_rows"]) == 5


def test_another_users_dataset_is_not_found(client: Client, data_dir: Path) -> None:
    owner, stranger = client.user(), client.user()
    dataset = client.ready_dataset(owner)
    base = f"/api/datasets/{dataset['id']}"

    for method, url in [
        ("GET", base),
        ("GET", f"{base}/preview"),
        ("GET", f"{base}/download"),
        ("DELETE", base),
    ]:
        assert_error(client.request(method, url, headers=stranger.headers), 404, "not_found")
    renamed = client.patch(base, headers=stranger.headers, json={"name": "mine now"})
    assert_error(renamed, 404, "not_found")

    assert client.get(base, headers=owner.headers).json()["name"] == "census"
    assert (dataset_path(data_dir, owner, dataset["id"]) / "data.parquet").exists()


def test_unknown_dataset_is_not_found(client: Client) -> None:
    user = client.user()

    response = client.get(f"/api/datasets/{uuid.uuid4()}", headers=user.headers)

    assert_error(response, 404, "not_found", "Dataset not found")


# --- rename -----------------------------------------------------------------------------------


def test_rename_and_describe_and_the_session_shows_the_new_name(client: Client) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    session = client.session(user, [dataset["id"]])
    url = f"/api/datasets/{dataset['id']}"

    renamed = client.patch(
        url, headers=user.headers, json={"name": "  Census 2024  ", "description": "Exam data"}
    )

    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["description"]) == ("Census 2024", "Exam data")
    assert renamed.json()["profile"]["rows"] == 8
    assert client.get(url, headers=user.headers).json()["name"] == "Census 2024"
    in_session = client.get(f"/api/sessions/{session['id']}", headers=user.headers).json()
    assert [d["name"] for d in in_session["datasets"]] == ["Census 2024"]

    # Only the description: the name stays; null clears the description.
    cleared = client.patch(url, headers=user.headers, json={"description": None}).json()
    assert (cleared["name"], cleared["description"]) == ("Census 2024", None)


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "   "}, {"name": "x" * 201}])
def test_rename_refuses_an_empty_or_overlong_name(client: Client, body: dict[str, str]) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)

    response = client.patch(f"/api/datasets/{dataset['id']}", headers=user.headers, json=body)

    assert_error(response, 422, "validation_error")
    assert client.get(f"/api/datasets/{dataset['id']}", headers=user.headers).json()["name"] == (
        "census"
    )


# --- preview ----------------------------------------------------------------------------------


def test_preview_returns_the_first_rows(client: Client) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    url = f"/api/datasets/{dataset['id']}/preview"

    three = client.get(f"{url}?limit=3", headers=user.headers).json()
    default = client.get(url, headers=user.headers).json()
    most = client.get(f"{url}?limit=1000", headers=user.headers).json()

    assert three["columns"] == [
        {"name": "age", "type": "int64"},
        {"name": "income", "type": "int64"},
        {"name": "education", "type": "string"},
        {"name": "workclass", "type": "string"},
    ]
    assert three["rows"] == [
        {"age": 25, "income": 30000, "education": "HS", "workclass": "Private"},
        {"age": 30, "income": 45000, "education": "BS", "workclass": "Private"},
        {"age": 35, "income": 55000, "education": "BS", "workclass": "Gov"},
    ]
    assert (three["limit"], three["total_rows"]) == (3, 8)
    assert (default["limit"], len(default["rows"])) == (50, 8)
    assert (most["limit"], len(most["rows"])) == (1000, 8)


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc"])
def test_preview_limit_out_of_bounds_is_422(client: Client, limit: str) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)

    response = client.get(
        f"/api/datasets/{dataset['id']}/preview?limit={limit}", headers=user.headers
    )

    assert_error(response, 422, "validation_error")


def test_preview_of_nan_and_infinity_is_valid_json(client: Client) -> None:
    user = client.user()
    content = parquet_bytes(pa.table({"x": [1.5, float("nan"), float("inf"), None]}))
    dataset = upload_one(client, user, content, "floats.parquet")

    response = client.get(f"/api/datasets/{dataset['id']}/preview", headers=user.headers)

    assert response.status_code == 200
    assert json.loads(response.text)["rows"] == [{"x": 1.5}, {"x": None}, {"x": None}, {"x": None}]


# --- download ---------------------------------------------------------------------------------

RISKY_ROWS = [
    {"=cmd": '=HYPERLINK("http://evil")', "label": "+1", "amount": -5, "ratio": -0.5},
    {"=cmd": "-2+3", "label": "@SUM(A1)", "amount": 7, "ratio": 1.25},
    {"=cmd": "\tTabbed", "label": "\rCarriage", "amount": 0, "ratio": 0.0},
    {"=cmd": "plain", "label": "a=b", "amount": 10, "ratio": None},
]


def test_csv_download_neutralises_formulas_and_leaves_numbers_alone(client: Client) -> None:
    user = client.user()
    content = b"".join(json.dumps(row).encode() + b"\n" for row in RISKY_ROWS)
    dataset = upload_one(client, user, content, "risky.jsonl")

    response = client.get(f"/api/datasets/{dataset['id']}/download", headers=user.headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="risky.csv"'
    assert read_csv(response.text) == [
        ["'=cmd", "label", "amount", "ratio"],
        ['\'=HYPERLINK("http://evil")', "'+1", "-5", "-0.5"],
        ["'-2+3", "'@SUM(A1)", "7", "1.25"],
        ["'\tTabbed", "'\rCarriage", "0", "0"],
        ["plain", "a=b", "10", ""],
    ]


def test_csv_download_round_trips_the_census(client: Client) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)

    response = client.get(
        f"/api/datasets/{dataset['id']}/download?format=csv", headers=user.headers
    )

    assert read_csv(response.text) == read_csv(CENSUS_CSV.decode())


def test_parquet_download_has_the_same_rows(client: Client) -> None:
    user = client.user()
    content = b"".join(json.dumps(row).encode() + b"\n" for row in RISKY_ROWS)
    dataset = upload_one(client, user, content, "risky.jsonl")
    client.patch(f"/api/datasets/{dataset['id']}", headers=user.headers, json={"name": "Mé/x y"})

    response = client.get(
        f"/api/datasets/{dataset['id']}/download?format=parquet", headers=user.headers
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert 'filename="M_x_y.parquet"' in response.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(response.content))
    assert table.to_pylist() == RISKY_ROWS  # unmodified: Parquet is not run as formulas


def test_download_format_must_be_csv_or_parquet(client: Client) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)

    response = client.get(
        f"/api/datasets/{dataset['id']}/download?format=xlsx", headers=user.headers
    )

    assert_error(response, 422, "validation_error")


# --- delete -----------------------------------------------------------------------------------


def test_delete_removes_the_row_and_the_files_and_sessions_remember_it(
    client: Client, data_dir: Path, pg_engine: Engine
) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    keep = client.ready_dataset(user, CENSUS_CSV, "keep.csv")
    session = client.session(user, [dataset["id"], keep["id"]])
    folder = dataset_path(data_dir, user, dataset["id"])
    assert (folder / "data.parquet").exists()

    response = client.delete(f"/api/datasets/{dataset['id']}", headers=user.headers)

    assert response.status_code == 204
    assert response.content == b""
    assert not folder.exists()
    assert [str(d.id) for d in dataset_rows(pg_engine, user)] == [keep["id"]]
    assert {p.parent.name for p in files_under(data_dir)} == {uuid.UUID(keep["id"]).hex}
    url = f"/api/datasets/{dataset['id']}"
    assert_error(client.get(url, headers=user.headers), 404, "not_found")
    assert_error(client.delete(url, headers=user.headers), 404, "not_found")
    shown = client.get(f"/api/sessions/{session['id']}", headers=user.headers).json()
    gone, kept = shown["datasets"]
    assert (gone["id"], gone["name"], gone["status"]) == (None, "census", "deleted")
    assert gone["deleted_at"] is not None
    assert (kept["id"], kept["status"], kept["deleted_at"]) == (keep["id"], "ready", None)


def test_delete_of_a_failed_dataset(client: Client, pg_engine: Engine) -> None:
    user = client.user()
    [dataset] = client.upload(user, b"a,b\n1,2\n" + b"3\n" * 1500, "broken.csv")["data"]
    assert client.wait_dataset(user, dataset["id"])["status"] == "failed"

    response = client.delete(f"/api/datasets/{dataset['id']}", headers=user.headers)

    assert response.status_code == 204
    assert dataset_rows(pg_engine, user) == []


# --- refused uploads leave nothing behind -------------------------------------------------------


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "qb0undary") -> bytes:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _lying_zip() -> bytes:
    data = bytearray(zip_bytes([("liar.csv", b"a,b\n" + b"1,2\n" * (MB // 2))]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        struct.pack_into("<I", data, data.find(signature) + offset, 1000)
    return bytes(data)


MULTIPART = {"Content-Type": "multipart/form-data; boundary=qb0undary"}
WIDE = (",".join(f"c{i}" for i in range(100_000)) + "\n" + "1," * 99_999 + "1\n").encode()

# name -> (request kwargs, status, code, message or None)
REFUSED: dict[str, tuple[dict[str, Any], int, str, str | None]] = {
    "no-file-field": (
        {"content": _multipart([("name", None, b"census")]), "headers": MULTIPART},
        422,
        "validation_error",
        "No file found: send it in the form field 'file'.",
    ),
    "no-parts-at-all": (
        {"content": _multipart([]), "headers": MULTIPART},
        422,
        "validation_error",
        "No file found: send it in the form field 'file'.",
    ),
    "two-files": (
        {
            "files": [
                ("file", ("a.csv", CENSUS_CSV, "text/csv")),
                ("file", ("b.csv", CENSUS_CSV, "text/csv")),
            ]
        },
        422,
        "validation_error",
        "Send one file per request (or several inside a ZIP).",
    ),
    "wrong-field-name": (
        {"files": {"upload": ("census.csv", CENSUS_CSV, "text/csv")}},
        422,
        "validation_error",
        "Send the file in the form field 'file'.",
    ),
    "json-body": (
        {"json": {"file": "age,income\n25,3\n"}},
        415,
        "unsupported_media_type",
        "Send the file as multipart/form-data in a field named 'file'.",
    ),
    "raw-csv-body": (
        {"content": CENSUS_CSV, "headers": {"Content-Type": "text/csv"}},
        415,
        "unsupported_media_type",
        "Send the file as multipart/form-data in a field named 'file'.",
    ),
    "multipart-without-boundary": (
        {"content": CENSUS_CSV, "headers": {"Content-Type": "multipart/form-data"}},
        415,
        "unsupported_media_type",
        "Send the file as multipart/form-data in a field named 'file'.",
    ),
    "truncated-multipart": (
        {
            "content": b'--qb0undary\r\nContent-Disposition: form-data; name="file"; '
            b'filename="census.csv"\r\n\r\n' + CENSUS_CSV,
            "headers": MULTIPART,
        },
        422,
        "validation_error",
        "The upload ended before its multipart body did; send it again.",
    ),
    "empty-file": (
        {"files": {"file": ("census.csv", b"", "text/csv")}},
        422,
        "validation_error",
        "The file is empty.",
    ),
    "whitespace-file": (
        {"files": {"file": ("census.csv", b" \n\n \n", "text/csv")}},
        422,
        "validation_error",
        "'census.csv' is empty.",
    ),
    "junk-binary": (
        {"files": {"file": ("data.csv", bytes(range(256)) * 64, "text/csv")}},
        422,
        "validation_error",
        "The file is not text in any encoding Quarry recognises.",
    ),
    "unsupported-extension": (
        {"files": {"file": ("notes.docx", b"PK\x03\x04...", "application/octet-stream")}},
        415,
        "unsupported_media_type",
        None,
    ),
    "100000-columns": (
        {"files": {"file": ("wide.csv", WIDE, "text/csv")}},
        422,
        "validation_error",
        "'wide.csv' has 100000 columns; Quarry accepts at most 2000 (MAX_DATASET_COLUMNS).",
    ),
    "header-only": (
        {"files": {"file": ("census.csv", b"age,income\n", "text/csv")}},
        422,
        "validation_error",
        "'census.csv' has a header row but no data rows.",
    ),
    "dot-dot-member": (
        {"files": {"file": ("x.zip", zip_bytes([("../../evil.csv", CENSUS_CSV)]), "app/zip")}},
        422,
        "validation_error",
        "The archive entry '../../evil.csv' has an unsafe path.",
    ),
    "nested-zip": (
        {
            "files": {
                "file": ("x.zip", zip_bytes([("in.zip", zip_bytes([("a.csv", CENSUS_CSV)]))]), "z")
            }
        },
        422,
        "validation_error",
        "'in.zip' is an archive inside the archive; unpack it.",
    ),
    "lying-member-size": (
        {"files": {"file": ("x.zip", _lying_zip(), "application/zip")}},
        422,
        "validation_error",
        None,
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_uploads_leave_no_row_and_no_file(
    client: Client, data_dir: Path, pg_engine: Engine, case: str
) -> None:
    kwargs, status, code, message = REFUSED[case]
    user = client.user()

    response = client.post(
        "/api/datasets",
        headers={**user.headers, **kwargs.get("headers", {})},
        **{k: v for k, v in kwargs.items() if k != "headers"},
    )

    assert_error(response, status, code, message)
    assert_nothing_stored(pg_engine, data_dir, user)


def test_a_zip_bomb_is_refused_and_leaves_nothing(
    client: Client, data_dir: Path, pg_engine: Engine, zip_bomb: bytes
) -> None:
    user = client.user()

    response = post_file(client, user, zip_bomb, "bomb.zip")

    message = assert_error(response, 422, "validation_error")
    assert message.startswith("The archive entry 'bomb.csv' expands ")
    assert message.endswith("it looks like a ZIP bomb.")
    assert_nothing_stored(pg_engine, data_dir, user)


def test_over_the_upload_cap_is_413_and_leaves_nothing(
    build: Build, data_dir: Path, pg_engine: Engine
) -> None:
    client = build(max_upload_mb=1)
    user = client.user()
    rows = b"".join(b"%d,%d\n" % (i, i * 7) for i in range(150_000))
    content = b"a,b\n" + rows
    assert MB < len(content) < 2 * MB  # under the framing allowance: streamed, then cut

    response = post_file(client, user, content, "big.csv")

    assert_error(
        response, 413, "payload_too_large", "The file is larger than the 1 MB upload limit."
    )
    assert_nothing_stored(pg_engine, data_dir, user)

    # Far over the cap: refused from its Content-Length before the body is read.
    huge = post_file(client, user, content * 3, "huge.csv")
    assert_error(huge, 413, "payload_too_large")
    assert_nothing_stored(pg_engine, data_dir, user)

    # Just under the cap is fine.
    small = upload_one(client, user, content[: MB - 1000].rsplit(b"\n", 1)[0] + b"\n", "ok.csv")
    assert small["status"] == "ready"


# --- conversions that do not end well -----------------------------------------------------------


def test_a_conversion_failure_after_a_good_sniff_is_reported(
    client: Client, data_dir: Path
) -> None:
    user = client.user()
    # The first 200 rows (all the sniffer looks at) are fine; 1500 later rows are short.
    content = b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(300)) + b"7\n" * 1500

    response = post_file(client, user, content, "breaks-later.csv")
    assert response.status_code == 202, response.text
    [dataset] = response.json()["data"]
    done = client.wait_dataset(user, dataset["id"])

    assert done["status"] == "failed"
    assert done["error"] == (
        "More than 1000 rows have the wrong number of fields (Row #1302: Expected 2 columns, "
        "got 1: 7)"
    )
    assert (done["row_count"], done["profile"], done["ready_at"]) == (None, None, None)
    url = f"/api/datasets/{dataset['id']}"
    for suffix in ("/preview", "/download", "/download?format=parquet"):
        assert_error(
            client.get(url + suffix, headers=user.headers),
            409,
            "dataset_failed",
            f"The dataset could not be processed: {done['error']}",
        )
    staging_removed(data_dir)
    assert files_under(data_dir) == []
    used = client.post("/api/sessions", headers=user.headers, json={"dataset_ids": [done["id"]]})
    assert_error(used, 422, "validation_error")


def test_one_bad_sheet_fails_alone(client: Client) -> None:
    user = client.user()
    content = xlsx_bytes({"Data": [["a"], [1], [2]], "Header": [["a", "b"]]})

    response = post_file(client, user, content, "book.xlsx")
    data, header = (client.wait_dataset(user, d["id"]) for d in response.json()["data"])

    assert (data["status"], data["row_count"]) == ("ready", 2)
    assert (header["status"], header["error"]) == (
        "failed",
        "Sheet 'Header' has a header but no data rows.",
    )


def test_preview_and_download_are_409_while_processing(
    client: Client, slow_workbook: bytes
) -> None:
    user = client.user()

    response = post_file(client, user, slow_workbook, "slow.xlsx")
    [dataset] = response.json()["data"]
    url = f"/api/datasets/{dataset['id']}"

    message = "The dataset is still being processed; try again in a moment."
    assert_error(
        client.get(f"{url}/preview", headers=user.headers), 409, "dataset_not_ready", message
    )
    assert_error(
        client.get(f"{url}/download", headers=user.headers), 409, "dataset_not_ready", message
    )
    assert client.get(url, headers=user.headers).json()["status"] == "processing"
    listed = client.get("/api/datasets?status=processing", headers=user.headers).json()
    assert [d["id"] for d in listed["data"]] == [dataset["id"]]


def test_a_conversion_over_the_time_limit_fails_and_leaves_no_files(
    build: Build, data_dir: Path, slow_workbook: bytes
) -> None:
    client = build(ingest_timeout_seconds=1)
    user = client.user()

    [dataset] = client.upload(user, slow_workbook, "slow.xlsx")["data"]
    done = client.wait_dataset(user, dataset["id"], timeout=30)

    assert done["status"] == "failed"
    assert done["error"] == (
        "Converting took longer than 1 s; upload a smaller file or raise INGEST_TIMEOUT_SECONDS."
    )
    staging_removed(data_dir)
    assert files_under(data_dir) == []
    assert converter_pids() == []


@pytest.mark.slow
def test_a_dataset_deleted_while_converting_leaves_no_files(
    client: Client, data_dir: Path, pg_engine: Engine, slow_workbook: bytes
) -> None:
    user = client.user()
    [dataset] = client.upload(user, slow_workbook, "slow.xlsx")["data"]
    wait_until(lambda: bool(converter_pids()), timeout=30)

    response = client.delete(f"/api/datasets/{dataset['id']}", headers=user.headers)
    assert response.status_code == 204
    assert converter_pids()  # still converting when deleted

    # The conversion finishes on its own; its output must not outlive the dataset.
    wait_until(lambda: not converter_pids(), timeout=60)
    wait_until(lambda: files_under(data_dir) == [], timeout=30)
    time.sleep(0.3)  # anything still to happen would happen now
    assert files_under(data_dir) == []
    assert list((data_dir / "uploads").iterdir()) == []
    assert not dataset_path(data_dir, user, dataset["id"]).exists()
    assert dataset_rows(pg_engine, user) == []


# --- the conversion on the datasets queue: idempotent, reaped (worker/datasets.py) -----------
# The worker's own functions, called in this process; tests/test_dataset_worker.py drives
# them through real Celery worker processes. The reaper looks at the whole (shared) test
# database, so these tests only look at what it did to their own datasets.


@pytest.fixture
def factory(pg_engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(pg_engine, expire_on_commit=False)


@pytest.fixture
def lost_messages(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The app's messages go nowhere (a broker that lost them); the list says what was sent."""
    sent: list[tuple[Any, ...]] = []

    def send(*args: Any, **_: Any) -> bool:
        sent.append(args)
        return True

    monkeypatch.setattr(app.state.quarry.queue, "send", send)
    return sent


class Reaper:
    """Calls the dataset reaper (stale after 30 s, lost after 60 s); `send` converts, in
    this process, the uploads in `convert` and only records the others."""

    def __init__(self, settings: Settings, factory: sessionmaker[Session]) -> None:
        self.settings, self.factory = settings, factory
        self.sent: list[uuid.UUID] = []
        self.convert: set[uuid.UUID] = set()

    def send(self, upload_id: uuid.UUID) -> bool:
        self.sent.append(upload_id)
        if upload_id in self.convert:
            convert_upload(upload_id, self.settings, self.factory)
        return True

    def __call__(self) -> None:
        with self.factory() as db:
            reap(
                db,
                data_dir=self.settings.data_dir,
                stale_after_s=30,
                queued_timeout_s=60,
                send=self.send,
            )

    def sent_of(self, *upload_ids: uuid.UUID) -> list[uuid.UUID]:
        return [u for u in self.sent if u in upload_ids]


@pytest.fixture
def reaper(settings: Settings, factory: sessionmaker[Session]) -> Reaper:
    return Reaper(settings, factory)


def upload_id_of(engine: Engine, dataset_id: str) -> uuid.UUID:
    with Session(engine) as db:
        found = db.scalar(select(Dataset.upload_id).where(Dataset.id == uuid.UUID(dataset_id)))
    assert found is not None
    return found


def row(engine: Engine, dataset_id: str) -> Dataset:
    with Session(engine, expire_on_commit=False) as db:
        found = db.get(Dataset, uuid.UUID(dataset_id))
    assert found is not None
    return found


def age(engine: Engine, dataset_id: str, **columns: float) -> None:
    """Move timestamps of a dataset back by so many seconds (a lost message, a dead worker)."""
    with Session(engine) as db:
        dataset = db.get(Dataset, uuid.UUID(dataset_id))
        assert dataset is not None
        for column, seconds in columns.items():
            setattr(dataset, column, getattr(dataset, column) - timedelta(seconds=seconds))
        db.commit()


def test_the_upload_message_carries_only_the_upload_id(
    client: Client, lost_messages: list[tuple[Any, ...]], pg_engine: Engine, data_dir: Path
) -> None:
    user = client.user()
    book = xlsx_bytes({"A": [["x"], [1]], "B": [["y"], [2]]})
    first, second = client.upload(user, book, "book.xlsx")["data"]

    upload_id = upload_id_of(pg_engine, first["id"])
    assert lost_messages == [(CONVERT_UPLOAD, str(upload_id))]
    assert upload_id_of(pg_engine, second["id"]) == upload_id  # one message per upload
    stored = row(pg_engine, first["id"])
    assert stored.source is not None
    assert (stored.source["path"], stored.source["sheet_name"]) == ("upload", "A")
    assert (stored.attempts, stored.requeues, stored.heartbeat_at) == (0, 0, None)
    assert stored.enqueued_at is not None
    assert (staging_dir(data_dir, upload_id) / "upload").is_file()


def test_a_duplicate_message_does_nothing(
    client: Client, settings: Settings, factory: sessionmaker[Session], pg_engine: Engine
) -> None:
    user = client.user()
    dataset = client.ready_dataset(user)
    before = row(pg_engine, dataset["id"])
    assert (before.attempts, before.source) == (1, None)

    assert convert_upload(str(before.upload_id), settings, factory) == "skipped"

    after = row(pg_engine, dataset["id"])
    assert (after.status, after.attempts, after.updated_at) == ("ready", 1, before.updated_at)
    assert not staging_dir(settings.data_dir, upload_id_of(pg_engine, dataset["id"])).exists()


def test_an_upload_another_worker_is_converting_is_not_converted_twice(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    settings: Settings,
    factory: sessionmaker[Session],
    pg_engine: Engine,
) -> None:
    user = client.user()
    [dataset] = client.upload(user)["data"]
    upload_id = upload_id_of(pg_engine, dataset["id"])
    with factory() as db:
        [held] = claim(db, upload_id)  # another worker has it
    assert held.attempt == 1

    assert convert_upload(upload_id, settings, factory) == "skipped"

    assert row(pg_engine, dataset["id"]).status == "processing"
    assert staging_dir(settings.data_dir, upload_id).is_dir()  # that worker still needs it
    with factory() as db:
        assert claim(db, upload_id) == []


def test_the_reaper_sends_a_lost_message_again_once_then_fails_the_dataset(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    reaper: Reaper,
    pg_engine: Engine,
    data_dir: Path,
) -> None:
    user = client.user()
    [kept] = client.upload(user)["data"]
    [lost] = client.upload(user, b"a,b\n1,2\n", "small.csv")["data"]
    ours = upload_id_of(pg_engine, kept["id"]), upload_id_of(pg_engine, lost["id"])
    reaper.convert.add(ours[0])  # the re-sent message for `lost` goes missing again

    reaper()
    assert reaper.sent_of(*ours) == []  # nothing is late yet
    age(pg_engine, kept["id"], enqueued_at=61)
    age(pg_engine, lost["id"], enqueued_at=61)
    reaper()
    assert reaper.sent_of(*ours) == sorted(ours)
    assert client.wait_dataset(user, kept["id"])["status"] == "ready"
    assert row(pg_engine, lost["id"]).requeues == 1

    reaper()
    assert row(pg_engine, lost["id"]).status == "processing"  # sent again just now
    age(pg_engine, lost["id"], enqueued_at=61)
    reaper()

    failed = client.wait_dataset(user, lost["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "No worker started converting this file within 60 s; check that a worker is "
        "listening on the datasets queue, then upload the file again."
    )
    assert reaper.sent_of(*ours) == sorted(ours)  # never a third time
    assert not staging_dir(data_dir, ours[1]).exists()
    assert not dataset_path(data_dir, user, lost["id"]).exists()


def test_the_reaper_retries_a_conversion_whose_worker_died_once_then_fails_it(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    reaper: Reaper,
    settings: Settings,
    factory: sessionmaker[Session],
    pg_engine: Engine,
    data_dir: Path,
) -> None:
    user = client.user()
    [dataset] = client.upload(user)["data"]
    upload_id = upload_id_of(pg_engine, dataset["id"])
    with factory() as db:
        claim(db, upload_id)  # a worker took it, then died (no more heartbeats)
    reaper()
    assert reaper.sent_of(upload_id) == []  # its heartbeat is recent
    age(pg_engine, dataset["id"], heartbeat_at=31)

    reaper()

    assert reaper.sent_of(upload_id) == [upload_id]
    stored = row(pg_engine, dataset["id"])
    assert (stored.status, stored.heartbeat_at, stored.requeues) == ("processing", None, 1)
    with factory() as db:
        claim(db, upload_id)  # the second worker dies too
    age(pg_engine, dataset["id"], heartbeat_at=31)
    reaper()

    failed = client.wait_dataset(user, dataset["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "The worker converting this file stopped responding (2 attempts); it may have run out "
        "of memory or been restarted. Upload the file again, or split it into smaller files."
    )
    assert reaper.sent_of(upload_id) == [upload_id]
    assert not staging_dir(data_dir, upload_id).exists()
    # A worker that was only slow, not dead, finds it settled and keeps nothing.
    assert convert_upload(upload_id, settings, factory) == "skipped"
    assert not dataset_path(data_dir, user, dataset["id"]).exists()


def test_a_slow_worker_that_lost_its_claim_does_not_overwrite_the_outcome(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    reaper: Reaper,
    settings: Settings,
    factory: sessionmaker[Session],
    pg_engine: Engine,
) -> None:
    user = client.user()
    [dataset] = client.upload(user)["data"]
    upload_id = upload_id_of(pg_engine, dataset["id"])
    with factory() as db:
        [first] = claim(db, upload_id)
    age(pg_engine, dataset["id"], heartbeat_at=31)
    reaper.convert.add(upload_id)
    reaper()  # re-sent: a second worker claims and converts it
    ready = row(pg_engine, dataset["id"])
    assert (ready.status, ready.attempts) == ("ready", 2)

    with factory() as db:  # the first worker comes back late, with a failure
        assert settle(db, settings.data_dir, first, {"ok": False, "error": "late"}) is None

    again = row(pg_engine, dataset["id"])
    assert (again.status, again.error, again.updated_at) == ("ready", None, ready.updated_at)
    assert dataset_path(settings.data_dir, user, dataset["id"]).is_dir()


def test_the_reaper_fails_datasets_an_in_api_conversion_left_processing(
    client: Client, reaper: Reaper, pg_engine: Engine
) -> None:
    """Before migration 0004 the API converted uploads itself; one killed mid-conversion left
    datasets `processing` with nothing to convert them from."""
    user = client.user()
    dataset = client.ready_dataset(user)
    with Session(pg_engine) as db:
        db.execute(
            update(Dataset)
            .where(Dataset.id == uuid.UUID(dataset["id"]))
            .values(status="processing", upload_id=None, heartbeat_at=None, enqueued_at=None)
        )
        db.commit()
    age(pg_engine, dataset["id"], created_at=61)

    reaper()

    failed = client.wait_dataset(user, dataset["id"])
    assert (failed["status"], failed["error"]) == (
        "failed",
        "Quarry stopped while this file was being converted; upload it again.",
    )


def test_a_missing_upload_file_fails_with_a_message(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    settings: Settings,
    factory: sessionmaker[Session],
    pg_engine: Engine,
    data_dir: Path,
) -> None:
    """The worker sees another DATA_DIR than the API, or the file was removed."""
    user = client.user()
    [dataset] = client.upload(user)["data"]
    upload_id = upload_id_of(pg_engine, dataset["id"])
    remove_tree(staging_dir(data_dir, upload_id))

    assert convert_upload(upload_id, settings, factory) == "converted"

    failed = client.wait_dataset(user, dataset["id"])
    assert (failed["status"], failed["error"]) == (
        "failed",
        "Quarry no longer has the uploaded file to convert; upload it again.",
    )


def test_deleting_every_dataset_of_an_unconverted_upload_removes_its_file(
    client: Client, lost_messages: list[tuple[Any, ...]], pg_engine: Engine, data_dir: Path
) -> None:
    user = client.user()
    book = xlsx_bytes({"A": [["x"], [1]], "B": [["y"], [2]]})
    first, second = client.upload(user, book, "book.xlsx")["data"]
    upload_id = upload_id_of(pg_engine, first["id"])

    client.delete(f"/api/datasets/{first['id']}", headers=user.headers)
    assert staging_dir(data_dir, upload_id).is_dir()  # the other sheet still needs it
    client.delete(f"/api/datasets/{second['id']}", headers=user.headers)

    assert not staging_dir(data_dir, upload_id).exists()


# --- hostile and odd uploads: never a 500, never `processing` for ever -------------------------

NUL_PROFILE_NOTE = (
    "Some values hold NUL characters (U+0000): the dataset keeps them as they are; this "
    "profile shows each one as U+FFFD (\ufffd)."
)


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b'[{"text": "a\\u0000b", "n": 1}, {"text": "c", "n": 2}]', "values.json"),
        (b'{"text": "a\\u0000b", "n": 1}\n{"text": "c", "n": 2}\n', "values.jsonl"),
        (b'[{"text": "a", "n\\u0000": 1}, {"text": "c", "n\\u0000": 2}]', "keys.json"),
        (b'{"text": "a", "n\\u0000": 1}\n{"text": "c", "n\\u0000": 2}\n', "keys.ndjson"),
        (b"text,n\na\x00b,1\nc,2\n", "values.csv"),
    ],
    ids=["json-value", "jsonl-value", "json-key", "ndjson-key", "csv-value"],
)
def test_nul_characters_in_an_upload_are_data_and_it_converts(
    client: Client, data_dir: Path, content: bytes, filename: str
) -> None:
    """A NUL in a value wedged the conversion: PostgreSQL refused the profile holding it,
    the worker's write failed, and minutes later the reaper failed the dataset with "the
    worker stopped responding". The value keeps its NUL; the profile (stored in PostgreSQL)
    shows U+FFFD and says so; a column name loses its NUL."""
    user = client.user()
    [dataset] = client.upload(user, content, filename)["data"]

    done = client.wait_dataset(user, dataset["id"], timeout=30)

    assert (done["status"], done["error"]) == ("ready", None)
    preview = client.get(f"/api/datasets/{dataset['id']}/preview", headers=user.headers).json()
    assert [c["name"] for c in preview["columns"]] == ["text", "n"]
    assert [row["text"] for row in preview["rows"]] == (
        ["a\x00b", "c"] if "value" in filename else ["a", "c"]
    )
    notes = done["profile"].get("notes", [])
    if "value" in filename:
        assert NUL_PROFILE_NOTE in notes
        assert done["profile"]["sample_rows"][0]["text"] == "a\ufffdb"
    else:
        assert notes == ["NUL characters (U+0000) were removed from column names."]
    download = client.get(f"/api/datasets/{dataset['id']}/download", headers=user.headers)
    assert download.status_code == 200
    staging_removed(data_dir)


def test_an_xls_sheet_name_with_nul_is_stored_without_it(client: Client) -> None:
    """A BIFF sheet name (and header) may hold NUL: storing it answered 500."""
    user = client.user()
    content = xls_bytes({"Sheet\x001": [["na\x00me", "n"], ["a", 1], ["b", 2]]})

    [dataset] = upload_all_ready(client, user, content, "book.xls")

    assert (dataset["sheet_name"], dataset["row_count"]) == ("Sheet1", 2)
    preview = client.get(f"/api/datasets/{dataset['id']}/preview", headers=user.headers).json()
    assert preview["rows"] == [{"name": "a", "n": 1}, {"name": "b", "n": 2}]


DEEP = 100_000
TOO_DEEP = (
    "{} holds JSON nested more than 48 levels deep; Quarry reads at most 48. Flatten "
    "the deeply nested values (or store them as text) and upload the file again."
)


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (b"[" * DEEP + b"]" * DEEP, "arrays.json"),
        (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "objects.json"),
        (b'{"a": 1}\n{"a":' + b"[" * DEEP + b"]" * DEEP + b"}\n", "lines.jsonl"),
    ],
    ids=["arrays", "objects", "json-lines"],
)
def test_deeply_nested_json_is_a_422_with_its_reason(
    client: Client, data_dir: Path, pg_engine: Engine, content: bytes, filename: str
) -> None:
    """It answered 500: RecursionError in the request's inspection."""
    user = client.user()

    response = post_file(client, user, content, filename)

    assert_error(response, 422, "validation_error", TOO_DEEP.format(f"'{filename}'"))
    assert_nothing_stored(pg_engine, data_dir, user)


def test_deep_nesting_past_the_inspected_megabyte_fails_the_dataset_with_its_reason(
    client: Client, data_dir: Path
) -> None:
    """Past the first megabyte only the converter sees it: Arrow's JSON reader overflowed
    its stack there, and the user read that the converter ran out of memory."""
    user = client.user()
    rows = b"".join(b'{"id": %d, "name": "row %d"}\n' % (i, i) for i in range(50_000))
    content = rows + b'{"id": 0, "name": ' + b"[" * DEEP + b"]" * DEEP + b"}\n"
    assert len(rows) > MB

    [dataset] = client.upload(user, content, "late.jsonl")["data"]
    done = client.wait_dataset(user, dataset["id"], timeout=60)

    assert (done["status"], done["error"]) == ("failed", TOO_DEEP.format("The file"))
    staging_removed(data_dir)
    assert files_under(data_dir) == []


def test_json_nested_as_deep_as_a_table_holds_converts_and_previews(client: Client) -> None:
    user = client.user()
    row = {"id": 1, "deep": json.loads("[" * 45 + "1" + "]" * 45), "obj": {"a": {"b": 2}}}

    dataset = upload_one(client, user, json.dumps([row, row]).encode(), "nested.json")

    assert dataset["row_count"] == 2
    preview = client.get(f"/api/datasets/{dataset['id']}/preview", headers=user.headers)
    assert preview.status_code == 200
    assert preview.json()["rows"][0]["obj.a.b"] == 2


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (
            b"null",
            "value.json",
            "'value.json' holds a single JSON value (null), not a table: expected an array of "
            "objects, an object of equal-length arrays, or JSON Lines (one object per line).",
        ),
        (b"x", "one.csv", "'one.csv' has a header row but no data rows."),
        (
            json.dumps({f"k{i}": i for i in range(50_000)}).encode() + b"\n",
            "wide.jsonl",
            "'wide.jsonl' has rows with more than 2000 keys (each becomes a column); Quarry "
            "accepts at most 2000 columns (MAX_DATASET_COLUMNS).",
        ),
    ],
    ids=["json-null", "one-byte", "50k-keys"],
)
def test_odd_small_uploads_are_a_422_with_their_reason(
    client: Client,
    data_dir: Path,
    pg_engine: Engine,
    content: bytes,
    filename: str,
    message: str,
) -> None:
    user = client.user()

    assert_error(post_file(client, user, content, filename), 422, "validation_error", message)
    assert_nothing_stored(pg_engine, data_dir, user)


def test_a_million_keys_in_one_object_fails_the_dataset_fast_with_its_reason(
    client: Client, data_dir: Path
) -> None:
    """Over a megabyte the request cannot see it; pandas took half a minute over it and
    then the user read "needs more memory"."""
    user = client.user()
    content = json.dumps([{f"k{i}": i for i in range(1_000_000)}]).encode()

    [dataset] = client.upload(user, content, "wide.json")["data"]
    started = time.monotonic()
    done = client.wait_dataset(user, dataset["id"], timeout=60)

    assert (done["status"], done["error"]) == (
        "failed",
        "The file has rows with more than 2000 keys (each becomes a column); Quarry accepts "
        "at most 2000 columns (MAX_DATASET_COLUMNS).",
    )
    assert time.monotonic() - started < 30  # generous: a few seconds
    staging_removed(data_dir)
    assert files_under(data_dir) == []


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252"])
def test_json_lines_in_another_encoding_convert(client: Client, encoding: str) -> None:
    user = client.user()
    content = '{"city": "Zürich", "n": 1}\n{"city": "Genève", "n": 2}\n'.encode(encoding)

    dataset = upload_one(client, user, content, "cities.jsonl")

    preview = client.get(f"/api/datasets/{dataset['id']}/preview", headers=user.headers).json()
    assert [row["city"] for row in preview["rows"]] == ["Zürich", "Genève"]


def test_an_outcome_the_database_refuses_fails_the_dataset_at_once(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    settings: Settings,
    factory: sessionmaker[Session],
    pg_engine: Engine,
) -> None:
    """Whatever the converter reports that PostgreSQL will not store (a lone surrogate in a
    profile, say), the dataset ends `failed` with that reason now, not `processing` until
    the reaper gives up on a worker it takes for dead. A NUL in an error is stored as
    U+FFFD."""
    user = client.user()
    outcomes = [
        {
            "ok": True,
            "row_count": 1,
            "column_count": 1,
            "stored_bytes": 1,
            "profile": {"rows": 1, "columns": [{"name": "\udcff"}]},
        },
        {"ok": False, "error": "Row 7 holds \x00 where a number was expected."},
    ]
    settled = []
    for outcome in outcomes:
        [dataset] = client.upload(user)["data"]
        upload_id = upload_id_of(pg_engine, dataset["id"])
        with factory() as db:
            [held] = claim(db, upload_id)
        with factory() as db:
            assert settle(db, settings.data_dir, held, outcome) == "failed"
        settled.append(client.wait_dataset(user, dataset["id"], timeout=5))
        with factory() as db:
            assert claim(db, upload_id) == []  # settled: nothing left to convert

    assert [d["status"] for d in settled] == ["failed", "failed"]
    assert settled[0]["error"].startswith(
        "The file was read, but Quarry could not store what it found in it ("
    )
    assert settled[0]["error"].endswith(
        "); upload it again, or as CSV or Parquet, or report it to the operator."
    )
    assert settled[1]["error"] == "Row 7 holds \ufffd where a number was expected."


# --- uploads an API crash abandoned --------------------------------------------------------------


def stage(data_dir: Path, upload_id: uuid.UUID, written: bytes, age_s: float = 0) -> Path:
    """A staging folder as the upload route leaves it when its API dies mid-stream: the
    folder and the part of the file written so far, last touched `age_s` ago."""
    folder = staging_dir(data_dir, upload_id)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "upload").write_bytes(written)
    if age_s:
        then = time.time() - age_s
        for path in (folder / "upload", folder):
            os.utime(path, (then, then))
    return folder


def test_the_reaper_removes_upload_folders_nothing_will_use_and_keeps_live_ones(
    client: Client,
    lost_messages: list[tuple[Any, ...]],
    reaper: Reaper,
    settings: Settings,
    factory: sessionmaker[Session],
    pg_engine: Engine,
    data_dir: Path,
) -> None:
    """An API killed while an upload streamed to disk left its staging folder for ever.
    The reaper removes a folder once nothing has touched it for longer than an upload may
    take to arrive (UPLOAD_TIMEOUT_S, enforced) plus a margin for inspecting it, unless a
    dataset of its upload is still waiting for it."""
    old = STAGING_ABANDONED_AFTER_S + 60
    user = client.user()
    partial = CENSUS_CSV[:40]

    crashed = stage(data_dir, uuid.uuid4(), partial, age_s=old)  # nothing recorded
    arriving = stage(data_dir, uuid.uuid4(), partial)  # a live upload, still writing
    # a live upload that has not written for a while since its folder was made
    slow = stage(data_dir, uuid.uuid4(), partial, age_s=old)
    (slow / "upload").write_bytes(partial * 2)
    # recorded, its dataset still waiting for a worker: the dataset reaper's business
    [waiting] = client.upload(user)["data"]
    waiting_folder = staging_dir(data_dir, upload_id_of(pg_engine, waiting["id"]))
    stage(data_dir, upload_id_of(pg_engine, waiting["id"]), CENSUS_CSV, age_s=old)
    # recorded, converted, but its folder outlived the conversion (the worker died before
    # cleaning up), and one whose datasets were all deleted meanwhile
    [done] = client.upload(user)["data"]
    convert_upload(upload_id_of(pg_engine, done["id"]), settings, factory)
    assert row(pg_engine, done["id"]).status == "ready"
    converted = stage(data_dir, upload_id_of(pg_engine, done["id"]), partial, age_s=old)
    [deleted] = client.upload(user)["data"]
    gone = stage(data_dir, upload_id_of(pg_engine, deleted["id"]), partial, age_s=old)
    with Session(pg_engine) as db:  # (the API would remove the folder itself)
        db.execute(delete(Dataset).where(Dataset.id == uuid.UUID(deleted["id"])))
        db.commit()
    not_ours = data_dir / "uploads" / "notes"  # never made by Quarry: not touched
    not_ours.mkdir()

    with Session(pg_engine) as db:
        counts = reap(
            db,
            data_dir=data_dir,
            stale_after_s=30,
            queued_timeout_s=60,
            send=reaper.send,
        )

    assert counts["removed_uploads"] == 3
    assert [f.exists() for f in (crashed, converted, gone)] == [False] * 3
    assert [f.is_dir() for f in (arriving, slow, waiting_folder, not_ours)] == [True] * 4
    assert (waiting_folder / "upload").read_bytes() == CENSUS_CSV
    assert row(pg_engine, waiting["id"]).status == "processing"
    assert STAGING_ABANDONED_AFTER_S > UPLOAD_TIMEOUT_S  # never while one may still arrive


def test_an_upload_that_does_not_arrive_in_time_is_408_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    """What makes the reaper's age safe: no request holds a staging folder longer than
    UPLOAD_TIMEOUT_S to receive its file."""
    import anyio
    from starlette.requests import Request

    dest = tmp_path / "upload"
    head = b'--qb0undary\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'

    async def attempt() -> APIError:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": head + b"a,b\n1,2\n", "more_body": True}
            await anyio.sleep(3600)  # the client stalls
            raise AssertionError("unreachable")

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/datasets",
            "headers": [(b"content-type", b"multipart/form-data; boundary=qb0undary")],
        }
        with pytest.raises(APIError) as caught:
            await receive_upload(Request(scope, receive), dest, MB, timeout_s=0.5)
        return caught.value

    started = time.monotonic()
    error = anyio.run(attempt)

    assert (error.status_code, error.code) == (408, "request_timeout")
    assert error.message == (
        "The upload did not arrive within 0.5 s and was stopped; send it again over a faster "
        "connection, or split the file."
    )
    assert time.monotonic() - started < 10
    assert not dest.exists()


ODD_UPLOADS: dict[str, tuple[str, bytes]] = {
    "bom-only": ("bom.csv", b"\xef\xbb\xbf"),
    "utf16-bom-only": ("bom16.csv", b"\xff\xfe"),
    "utf32": ("u32.csv", "a,b\n1,2\n".encode("utf-32")),
    "utf16-without-bom": ("u16.csv", "a,b\n1,2\n".encode("utf-16-le")),
    "carriage-returns": ("cr.csv", b"a,b\r1,2\r3,4\r"),
    "truncated-json": ("cut.json", b"[" + b'{"a":1},' * 200_000),
    "fake-parquet": ("fake.parquet", b"PAR1" + bytes(100) + b"PAR1"),
    "nul-in-member-name": ("x.zip", zip_bytes([("a\x00b.csv", b"a,b\n1,2\n")])),
    "empty-zip": ("e.zip", zip_bytes([])),
    "broken-workbook": (
        "bad.xlsx",
        zip_bytes([("[Content_Types].xml", b"<x"), ("xl/workbook.xml", b"<<<")]),
    ),
    "open-quote": ("quote.csv", b'a,b\n"1,2\n3,4\n'),
    "only-delimiters": ("commas.csv", b",,,\n,,,\n"),
    "lone-surrogate-json": ("sur.json", b'[{"a":"\\ud800"}]'),
    "lone-surrogate-jsonl": ("sur.jsonl", b'{"a":"\\ud800"}\n'),
    "repeated-key": ("dup.jsonl", b'{"a":1,"a":2}\n'),
    "changing-type": ("num.jsonl", b'{"1":1}\n{"1":"x"}\n'),
    "object-then-array": ("mixed.jsonl", b'{"a":1}\n[1,2]\n'),
    "huge-integer": ("big.json", b'[{"a": 123456789012345678901234567890}]'),
    "nan": ("nan.json", b'[{"a": NaN}]'),
    "three-megabyte-cell": ("cell.csv", b"a\n" + b"x" * 3_000_000 + b"\n"),
    "control-characters": ("ctrl.csv", b"a,b\n\x01,\x02\n"),
    "nul-header": ("nul.csv", b"\x00,\x00\n1,2\n"),
    "latin1-json": ("lat.json", '[{"a":"é"}]'.encode("latin-1")),
    "empty-objects": ("e.jsonl", b"{}\n{}\n"),
}


@pytest.mark.parametrize("case", list(ODD_UPLOADS))
def test_an_odd_upload_never_answers_500_nor_stays_processing(client: Client, case: str) -> None:
    """Whatever the file: a 4xx with a reason, or datasets that end `ready` (and can be
    previewed and downloaded) or `failed` with a reason."""
    filename, content = ODD_UPLOADS[case]
    user = client.user()

    response = post_file(client, user, content, filename)

    assert response.status_code in {202, 413, 415, 422}, response.text
    if response.status_code != 202:
        assert response.json()["error"]["message"]
        return
    for dataset in response.json()["data"]:
        done = client.wait_dataset(user, dataset["id"], timeout=60)
        assert done["status"] in {"ready", "failed"}
        if done["status"] == "failed":
            assert done["error"]
            assert "could not be read (" not in done["error"]  # a reason, not an exception
            continue
        url = f"/api/datasets/{dataset['id']}"
        assert client.get(f"{url}/preview", headers=user.headers).status_code == 200
        assert client.get(f"{url}/download", headers=user.headers).status_code == 200
