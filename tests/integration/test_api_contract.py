"""The API keeps the promises of its own OpenAPI schema, checked by schemathesis.

Every operation of `/openapi.json` is called with generated requests (the schema's
examples, its boundary values and invalid variants, then random valid and invalid data),
as a signed-in user whose own objects the path parameters point at most of the time. Each
response must be no server error, carry a documented status code and content type, match
the documented body schema and headers, accept what the schema calls valid and refuse what
it calls invalid, and answer 405 with an `Allow` header for methods a path does not serve.

The run is deterministic (fixed seed, derandomized, no example database), so it fails or
passes the same way every time. `QUARRY_CONTRACT_EXAMPLES=500` runs a much larger
exploratory pass locally.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import configuration
from pydantic import ValidationError
from schemathesis.config import SchemathesisConfig
from sqlalchemy.orm import Session

from api.main import create_app
from api.models import AnalysisSession, CodeExecution, Visualization
from api.schemas import MAX_CODE_CHARS, NOT_BLANK_PATTERN, SessionCreate
from tests.builders import zip_bytes
from tests.conftest import make_settings
from tests.factories import CENSUS_CSV, PASSWORD, Client

EXAMPLES = int(os.environ.get("QUARRY_CONTRACT_EXAMPLES", "20"))
# Hypothesis keeps caches (constants found in the code, Unicode tables) in its home folder,
# ./.hypothesis unless told otherwise, and builds this module's tests at collection: point it
# out of the working tree before that. The run itself keeps no example database.
configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "quarry-hypothesis")

# The user the schema's own examples describe: the examples phase signs in as them.
EXAMPLE_EMAIL = "ada@example.com"
EXAMPLE_PASSWORD = "correct horse battery"
# Signing out (everywhere) and refreshing happen on another account, so that they never end
# the session the rest of the run uses.
SPARE_EMAIL = "grace@example.com"

# schemathesis' default for "valid input is accepted"
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]

CONFIG: dict[str, Any] = {
    "seed": 20_240_601,
    "generation": {
        "max-examples": EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "request-timeout": 30,
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    "operations": [
        # What a schema cannot say: the password policy (a block-list of leaked passwords,
        # enough different characters, not the email) and what a file contains. Both are
        # documented 4xx answers to input the schema calls well formed.
        {
            "include-name": "POST /api/auth/register",
            "checks": {"positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, "422"]}},
        },
        {
            "include-name": "POST /api/datasets",
            "checks": {
                "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, "415", "422"]}
            },
        },
    ],
}


@dataclass
class World:
    """The running API and what the signed-in user owns in it."""

    base_url: str
    http: httpx.Client
    headers: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)
    disposable_datasets: list[str] = field(default_factory=list)

    def login(self, email: str = EXAMPLE_EMAIL) -> dict[str, Any]:
        response = self.http.post(
            "/api/auth/login", json={"email": email, "password": EXAMPLE_PASSWORD}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def fresh_session(self) -> str:
        response = self.http.post("/api/sessions", headers=self.headers, json={})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="contract-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the API did not start"
        assert time.monotonic() < deadline, "the API did not start within 30 s"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[World]:
    settings = make_settings(
        tmp_path_factory.mktemp("contract") / "data",
        pg_url,
        # Limits stay on (429 is part of the contract) but high enough not to drown it.
        login_max_failures_per_account=1_000_000,
        turns_per_minute_per_user=1_000_000,
        access_token_ttl_minutes=24 * 60,
    )
    app = create_app(settings)
    server, thread, base_url = _serve(app)
    try:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for email in (SPARE_EMAIL, EXAMPLE_EMAIL):
                registered = http.post(
                    "/api/auth/register",
                    json={"email": email, "password": EXAMPLE_PASSWORD, "full_name": "Ada"},
                )
                assert registered.status_code == 201, registered.text
            world = World(base_url=base_url, http=http, headers={})
            world.headers = {"Authorization": f"Bearer {world.login()['access_token']}"}
            _populate(world, app, uuid.UUID(registered.json()["id"]))
            yield world
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _upload(world: World, filename: str, content: bytes) -> list[str]:
    response = world.http.post(
        "/api/datasets",
        headers=world.headers,
        files={"file": (filename, content, "application/octet-stream")},
    )
    assert response.status_code == 202, response.text
    return [d["id"] for d in response.json()["data"]]


def _wait_ready(world: World, dataset_ids: list[str]) -> None:
    deadline = time.monotonic() + 120
    for dataset_id in dataset_ids:
        while True:
            body = world.http.get(f"/api/datasets/{dataset_id}", headers=world.headers).json()
            if body["status"] != "processing":
                assert body["status"] == "ready", body
                break
            assert time.monotonic() < deadline, f"dataset {dataset_id} still processing"
            time.sleep(0.05)


def _populate(world: World, app: Any, user_id: uuid.UUID) -> None:
    """One of everything the path parameters name, owned by the signed-in user."""
    [dataset] = _upload(world, "census.csv", CENSUS_CSV)
    spares = _upload(
        world,
        "spares.zip",
        zip_bytes({f"spare{i}.csv": CENSUS_CSV for i in range(8)}, zipfile.ZIP_DEFLATED),
    )
    _wait_ready(world, [dataset, *spares])
    world.ids["dataset_id"] = dataset
    world.disposable_datasets = spares
    session = world.http.post(
        "/api/sessions", headers=world.headers, json={"dataset_ids": [dataset]}
    ).json()["id"]
    world.ids["session_id"] = session
    world.ids["patch_session_id"] = world.fresh_session()
    # A finished run (its event stream ends), and the chart and code it left behind.
    turn = world.http.post(
        f"/api/sessions/{session}/messages",
        headers=world.headers,
        json={"content": "Average income by education"},
    )
    assert turn.status_code == 202, turn.text
    run = turn.json()["run_id"]
    cancelled = world.http.post(f"/api/runs/{run}/cancel", headers=world.headers)
    assert cancelled.status_code == 202, cancelled.text
    world.ids["run_id"] = run
    state = app.state.quarry
    with Session(state.engine) as db:
        execution = CodeExecution(
            user_id=user_id,
            session_id=uuid.UUID(session),
            run_id=uuid.UUID(run),
            code="df.groupby('education')['income'].mean()",
            backend="process",
            outcome="ok",
            result={"stdout": "", "result": "42"},
            duration_ms=12,
        )
        db.add(execution)
        db.flush()
        viz = Visualization(
            user_id=user_id,
            session_id=uuid.UUID(session),
            run_id=uuid.UUID(run),
            code_execution_id=execution.id,
            title="Income by education",
            figure={"data": [{"type": "bar", "x": ["BS"], "y": [1]}], "layout": {}},
        )
        db.add(viz)
        db.commit()
        world.ids["visualization_id"] = str(viz.id)
        assert db.get(AnalysisSession, uuid.UUID(session)) is not None


def _load_schema() -> Any:
    """The schema as the app serves it; building the app opens no connection."""
    settings = make_settings(
        Path("/nonexistent/quarry-data"), "postgresql+psycopg2://unused@/unused"
    )
    return schemathesis.openapi.from_dict(
        create_app(settings).openapi(), config=SchemathesisConfig.from_dict(CONFIG)
    )


schema = _load_schema()


def _aim(case: Any, world: World) -> dict[str, str]:
    """Point most generated ids at the user's own objects and pick the credentials.

    The choice follows from the generated value itself, so a run is reproducible: a valid
    UUID whose number is not a multiple of 3 is swapped for a real id; the rest stay random
    (and answer 404). Deleting uses objects made for it; signing out uses its own token."""
    path = case.operation.path
    method = case.method.upper()
    headers = dict(world.headers)
    for name, value in list((case.path_parameters or {}).items()):
        try:
            generated = uuid.UUID(str(value))
        except ValueError:
            continue
        if generated.int % 3 == 0:
            continue
        if method == "DELETE" and name == "session_id":
            case.path_parameters[name] = world.fresh_session()
        elif method == "DELETE" and name == "dataset_id":
            pool = world.disposable_datasets
            case.path_parameters[name] = pool[generated.int % len(pool)]
        elif method == "PATCH" and name == "session_id":
            case.path_parameters[name] = world.ids["patch_session_id"]
        elif name in world.ids:
            case.path_parameters[name] = world.ids[name]
    if path in ("/api/auth/logout", "/api/auth/refresh"):
        tokens = world.login(SPARE_EMAIL)
        headers["Authorization"] = f"Bearer {tokens['access_token']}"
        body = case.body
        positive = case.meta is not None and case.meta.generation.mode.is_positive
        token = body.get("refresh_token") if isinstance(body, dict) else None
        if positive and isinstance(token, str) and len(token) % 3:
            body["refresh_token"] = tokens["refresh_token"]
    return headers


CALLS: Counter[str] = Counter()


@schema.parametrize()
def test_every_operation_keeps_its_documented_contract(case: Any, world: World) -> None:
    headers = _aim(case, world)
    CALLS[case.operation.label] += 1
    response = case.call_and_validate(base_url=world.base_url, headers=headers)
    _only_what_a_schema_cannot_say(case, response)


def _only_what_a_schema_cannot_say(case: Any, response: Any) -> None:
    """The two operations allowed to refuse schema-valid input (see CONFIG) refuse it only
    for what the schema cannot express: the password policy, the file's content."""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if not positive or response.status_code not in (415, 422):
        return
    error = response.json()["error"]
    if case.operation.label == "POST /api/auth/register":
        assert [d["field"] for d in error.get("details", [])] == ["password"], error
    elif case.operation.label == "POST /api/datasets":
        assert not error["message"].startswith(("name:", "description:")), error


def test_the_run_above_stayed_signed_in(world: World) -> None:
    """Had a sign-out ended the user's session, the operations after it would have been
    tested with a dead token only."""
    assert world.http.get("/api/auth/me", headers=world.headers).status_code == 200
    print(f"\ncontract: {sum(CALLS.values())} cases over {len(CALLS)} operations")


def test_a_last_event_id_that_is_not_a_number_is_ignored(world: World) -> None:
    """Over real HTTP: a header is latin-1 on the wire, so b"\\xb2" arrives as '²'."""
    address = urlsplit(world.base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.putrequest("GET", f"/api/runs/{world.ids['run_id']}/events?follow=false")
        connection.putheader("Authorization", world.headers["Authorization"])
        connection.putheader("Last-Event-ID", b"\xb2")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 200, response.read()[:300]
    finally:
        connection.close()


# --- what the exploratory runs found, pinned ---------------------------------------------------


def test_405_names_every_method_the_path_serves(client: Client) -> None:
    user = client.user()
    session = client.session(user)["id"]
    for method, path, allowed in [
        ("OPTIONS", f"/api/sessions/{session}", "GET, PATCH, DELETE"),
        ("PUT", f"/api/sessions/{session}", "GET, PATCH, DELETE"),
        ("DELETE", "/api/sessions", "GET, POST"),
        ("TRACE", f"/api/sessions/{session}/messages", "GET, POST"),
        ("GET", "/api/auth/login", "POST"),
    ]:
        response = client.request(method, path, headers=user.headers)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed, (method, path)
        error = response.json()["error"]
        assert error["code"] == "method_not_allowed"
        assert error["message"].startswith(f"{method} is not allowed here; use ")


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\x00garbage", b"\xc3\x28", b"[" * 100_000],
    ids=["utf16-bom-junk", "invalid-utf8", "nested-too-deep"],
)
def test_a_json_body_that_cannot_be_decoded_is_a_422(client: Client, body: bytes) -> None:
    user = client.user()
    session = client.session(user)["id"]
    response = client.patch(
        f"/api/sessions/{session}",
        headers={**user.headers, "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["message"].startswith("body: Request body is not valid JSON"), error
    assert error["details"][0]["field"] == "body"


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_booleans_in_bodies_must_be_json_booleans(client: Client, value: object) -> None:
    user = client.user()
    logout = client.post("/api/auth/logout", headers=user.headers, json={"everywhere": value})
    assert logout.status_code == 422, logout.text
    assert logout.json()["error"]["message"].startswith("everywhere: ")
    assert client.get("/api/auth/me", headers=user.headers).status_code == 200
    dataset = client.ready_dataset(user)["id"]
    patched = client.patch(
        f"/api/datasets/{dataset}", headers=user.headers, json={"share_samples": value}
    )
    expected = 200 if value is None else 422  # null: leave it as it is
    assert patched.status_code == expected, patched.text


def test_titles_are_measured_as_sent_and_must_not_be_blank(client: Client) -> None:
    user = client.user()
    padded = client.post("/api/sessions", headers=user.headers, json={"title": f" {'a' * 200} "})
    assert padded.status_code == 422, padded.text
    assert padded.json()["error"]["message"].startswith("title: ")
    for blank in ["   ", "\t\n", "\u3000", "\x1c"]:
        refused = client.post("/api/sessions", headers=user.headers, json={"title": blank})
        assert refused.status_code == 422, (blank, refused.text)
        assert refused.json()["error"]["message"] == (
            "title: must not be blank: write at least one character"
        )
    kept = client.post("/api/sessions", headers=user.headers, json={"title": "  Census  "})
    assert kept.status_code == 201
    assert kept.json()["title"] == "Census"


def test_title_pattern_agrees_with_the_code() -> None:
    """The schema's pattern and the API's check accept exactly the same titles."""
    pattern = re.compile(NOT_BLANK_PATTERN)
    for title in ["a", " a ", "\u3000x", "x\x1c", "   ", "\u3000", "\x1c\x1d", "\n", "a\x00"]:
        try:
            SessionCreate(title=title)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == bool(pattern.search(title)), repr(title)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "n" * 201), ("description", "d" * 2_501)],
)
def test_upload_fields_over_their_documented_length_are_refused(
    client: Client, field: str, value: str
) -> None:
    user = client.user()
    response = client.post(
        "/api/datasets",
        headers=user.headers,
        files={"file": ("census.csv", CENSUS_CSV, "text/csv")},
        data={field: value},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(f"{field}: must be at most ")


def test_upload_fields_at_their_documented_length_are_kept_whole(client: Client) -> None:
    user = client.user()
    response = client.post(
        "/api/datasets",
        headers=user.headers,
        files={"file": ("census.csv", CENSUS_CSV, "text/csv")},
        data={"name": "n" * 200, "description": "é" * 2_500},
    )
    assert response.status_code == 202, response.text
    [dataset] = response.json()["data"]
    assert dataset["name"] == "n" * 200
    assert dataset["description"] == "é" * 2_500


def test_the_schema_documents_every_error_with_the_error_shape(app: FastAPI) -> None:
    spec = app.openapi()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    missing = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            for status, response in responses.items():
                if status.startswith(("4", "5")) and path.startswith("/api/"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (
                        method,
                        path,
                        status,
                    )
            needed = set()
            if operation.get("security"):
                needed.add("401")
            if operation.get("parameters") or operation.get("requestBody"):
                needed.add("422")
            if operation.get("requestBody"):
                needed.add("413")
            missing += [(method, path, s) for s in sorted(needed - responses.keys())]
    assert missing == []
    login = spec["paths"]["/api/auth/login"]["post"]["responses"]
    assert {"400", "401", "422", "429"} <= login.keys()
    assert "410" in spec["paths"]["/api/datasets/{dataset_id}/preview"]["get"]["responses"]
    assert "404" not in spec["paths"]["/api/sessions"]["get"]["responses"]
    assert spec["paths"]["/api/sessions/{session_id}/messages"]["post"]["responses"]["429"][
        "headers"
    ]["Retry-After"]["required"]


@pytest.mark.parametrize(
    ("endpoint", "field", "limit"),
    [("executions", "code", MAX_CODE_CHARS), ("messages", "content", 20_000)],
)
def test_the_longest_valid_text_fits_under_the_body_limit_however_escaped(
    client: Client, endpoint: str, field: str, limit: int
) -> None:
    """Characters outside the BMP, \\u-escaped as many JSON encoders do: 12 bytes each."""
    user = client.user()
    session = client.session(user)["id"]
    body = json.dumps({field: "\U0001f99c" * limit}).encode()  # ensure_ascii: \ud83e\udd9c
    response = client.post(
        f"/api/sessions/{session}/{endpoint}",
        headers={**user.headers, "Content-Type": "application/json"},
        content=body,
    )
    assert response.status_code == 202, response.text[:300]
    client.post(f"/api/runs/{response.json()['run_id']}/cancel", headers=user.headers)


def test_registration_takes_what_the_schema_calls_an_email(client: Client) -> None:
    """`format: email` covers `.test` addresses (schemathesis draws them); Quarry sends no
    mail, so they are accounts like any other. The rest of the special-use domains are
    refused, as the schema's description says, in words without pydantic's prefix."""
    for email in ["0@0.test", "a!#$%&'*+-/=?^_`{|}~@b-c.example"]:
        created = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 201, (email, created.text)
    refused = client.post(
        "/api/auth/register", json={"email": "ada@host.local", "password": PASSWORD}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["message"].startswith(
        "email: not a valid email address (The part after the @-sign is a special-use"
    )
