"""What every request gets, whatever its route: probes, metrics, request ids, security
headers, CORS, one error shape, body limits, structured and redacted logs, and the OpenAPI
document. Everything goes through the HTTP API of a real app on a real PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx2 import Response
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from api import liveness
from api.config import Settings
from api.db import make_engine
from api.logs import configure_logging, get_logger
from api.main import create_app
from api.queue import QUEUES
from tests.conftest import REDIS_URL, TEST_SECRET, make_settings
from tests.factories import CENSUS_CSV, PASSWORD, Client, api_routes
from worker.heartbeat import WorkerHeartbeat

UI_ORIGIN = "http://localhost:8501"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
DATABASE_UNAVAILABLE = "The database is unavailable right now; retry in a moment."
INTERNAL_ERROR = "Something went wrong on our side. Quote the request id when you report it."
UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/x"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"

# build(app=None, **settings_overrides) -> a started Client
Build = Callable[..., Client]


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex}:"


@pytest.fixture
def build(data_dir: Path, pg_url: str) -> Iterator[Build]:
    """Starts an app on settings of the test's choosing; closes it at the end."""
    clients: list[TestClient] = []

    def start(app: FastAPI | None = None, **overrides: Any) -> Client:
        if app is None:
            overrides.setdefault("database_url", pg_url)
            database_url = overrides.pop("database_url")
            app = create_app(make_settings(data_dir, database_url, **overrides))
        test_client = TestClient(app)
        test_client.__enter__()
        clients.append(test_client)
        return Client(test_client)

    yield start
    for test_client in clients:
        test_client.__exit__(None, None, None)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Log tests point the root handler at a captured stderr; put the previous one back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def error_of(response: Response, status: int, code: str) -> dict[str, Any]:
    """The standard error body, checked for its exact shape; returns its inside."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = dict(body["error"])
    # Validation errors add the per-field list; nothing else ever adds a key.
    expected_keys = {"code", "message", "request_id"} | ({"details"} if status == 422 else set())
    assert set(error) == expected_keys
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# --- probes -----------------------------------------------------------------------------------


def test_healthz_says_the_process_is_alive(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}


def _no_heartbeats(settings: Settings) -> None:
    """Forget every worker row (workers of earlier tests, killed, may look alive for 30 s)."""
    engine = make_engine(settings)
    with Session(engine) as db:
        liveness.forget(db)
        db.commit()
    engine.dispose()


def test_readyz_checks_the_database_and_the_embedded_broker(
    client: Client, settings: Settings
) -> None:
    _no_heartbeats(settings)
    response = client.get("/readyz")
    assert response.status_code == 200
    no_worker = "no worker consumes this queue"
    assert response.json() == {
        "status": "degraded",
        "checks": {
            "database": "ok",
            "broker": "embedded",
            "workers:analysis": no_worker,
            "workers:datasets": no_worker,
            "workers:maintenance": no_worker,
        },
        "queues": {q: {"workers": 0, "depth": 0} for q in QUEUES},
    }


def test_readyz_says_which_queues_have_a_live_worker(client: Client, settings: Settings) -> None:
    """From the heartbeats workers write (the worker's own heartbeat code, in-process): a
    worker of some queues makes those `ok`; its clean stop removes it at once."""
    _no_heartbeats(settings)
    with WorkerHeartbeat(
        settings, hostname="celery@test", queues=["analysis", "maintenance"], concurrency=2,
        beat=True,
    ):  # fmt: skip
        found = client.get("/readyz").json()
        assert found["status"] == "degraded"  # nothing converts uploads
        assert found["checks"]["workers:analysis"] == "ok (1)"
        assert found["checks"]["workers:datasets"] == "no worker consumes this queue"
        assert found["queues"]["analysis"] == {"workers": 1, "depth": 0}
        with WorkerHeartbeat(
            settings, hostname="celery@other", queues=["datasets"], concurrency=1, beat=False
        ):
            found = client.get("/readyz").json()
            assert found["status"] == "ok"
            assert {k: v["workers"] for k, v in found["queues"].items()} == {
                "analysis": 1, "datasets": 1, "maintenance": 1,
            }  # fmt: skip
    assert client.get("/readyz").json()["status"] == "degraded"


def test_readyz_pings_a_real_redis(build: Build, redis_url: str) -> None:
    client = build(redis_url=REDIS_URL, redis_prefix=_prefix())
    response = client.get("/readyz")
    assert response.status_code == 200
    found = response.json()
    assert found["checks"]["database"] == "ok"
    assert found["checks"]["broker"] == "ok"
    assert {q["depth"] for q in found["queues"].values()} == {0}  # read from Redis


def test_readyz_answers_503_when_the_database_is_unreachable(build: Build) -> None:
    client = build(database_url=UNREACHABLE_DATABASE)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unavailable: OperationalError", "broker": "embedded"},
        "queues": None,
    }
    # Liveness does not depend on the database: an outage must not restart every pod.
    assert client.get("/healthz").status_code == 200


def test_readyz_answers_503_when_redis_is_unreachable(build: Build) -> None:
    client = build(redis_url=UNREACHABLE_REDIS, redis_prefix=_prefix())
    response = client.get("/readyz")
    assert response.status_code == 503
    found = response.json()
    assert found["status"] == "unavailable"
    assert found["checks"]["database"] == "ok"
    assert found["checks"]["broker"] == "unavailable: ConnectionError"
    assert {q["depth"] for q in found["queues"].values()} == {None}  # unreadable, not 0


def test_readyz_answers_in_time_when_the_database_hangs(build: Build) -> None:
    """A database host that accepts connections but never answers (a dropped packet, a
    stuck proxy) must not hold the probe past its deadline."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = build(database_url=f"postgresql://postgres@127.0.0.1:{port}/x")
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "timeout"
    assert elapsed < 5


# --- metrics ----------------------------------------------------------------------------------


def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_by_route_template_never_by_raw_id(client: Client) -> None:
    user = client.user()
    session_id = str(uuid.uuid4())
    stranger = f"/no/such/{uuid.uuid4()}"
    before = scrape(client)

    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    assert client.get(f"/api/sessions/{session_id}", headers=user.headers).status_code == 404
    assert client.get(f"/api/sessions/{session_id}").status_code == 401
    assert client.get(stranger).status_code == 404
    assert client.post("/healthz").status_code == 405

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "quarry_http_requests_total"
    assert delta(total, method="GET", route="/healthz", status="200") == 3
    assert delta(total, method="GET", route="/api/sessions/{session_id}", status="404") == 1
    assert delta(total, method="GET", route="/api/sessions/{session_id}", status="401") == 1
    assert delta(total, method="GET", route="unmatched", status="404") == 1
    assert delta(total, method="POST", route="/healthz", status="405") == 1
    # The previous scrape is counted too.
    assert delta(total, method="GET", route="/metrics", status="200") == 1

    labels = {v for (_name, pairs) in after for (_k, v) in pairs}
    assert not any(session_id in label or "/no/such" in label for label in labels)

    duration = "quarry_http_request_duration_seconds"
    assert delta(f"{duration}_count", method="GET", route="/healthz") == 3
    assert delta(f"{duration}_bucket", method="GET", route="/healthz", le="+Inf") == 3
    assert delta(f"{duration}_sum", method="GET", route="/healthz") > 0
    buckets = {
        dict(pairs)["le"]
        for (name, pairs) in after
        if name == f"{duration}_bucket" and dict(pairs)["route"] == "/healthz"
    }
    assert buckets == {
        "0.002", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
        "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf",
    }  # fmt: skip

    # Only the scrape that is answering is in flight: finished requests, errors included,
    # have all been subtracted.
    assert value(after, "quarry_http_requests_in_flight") == 1.0


def test_metrics_do_not_grow_a_series_per_invented_method(client: Client) -> None:
    before = scrape(client)
    for method in ("PURGE", "X-ANYTHING-1", "X-ANYTHING-2"):
        assert client.request(method, "/healthz").status_code == 405
    after = scrape(client)
    methods = {dict(pairs).get("method") for (name, pairs) in after}
    assert not methods & {"PURGE", "X-ANYTHING-1", "X-ANYTHING-2"}
    labels = {"method": "other", "route": "/healthz", "status": "405"}
    total = "quarry_http_requests_total"
    assert value(after, total, **labels) - value(before, total, **labels) == 3


# --- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["req-123", "0a1b2c3d-0000-4000-8000-abcdefabcdef", "trace:abc.DEF_9", "x" * 128],
)
def test_a_sane_request_id_is_echoed_and_quoted_in_errors(client: Client, request_id: str) -> None:
    ok = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert ok.headers["x-request-id"] == request_id
    failed = client.get("/api/auth/me", headers={"X-Request-ID": request_id})
    assert error_of(failed, 401, "unauthorized")["request_id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [
        "x" * 129,
        "has spaces in it",
        "abc\r\nSet-Cookie: session=stolen",
        "abc\nX-Injected: 1",
        "<script>alert(1)</script>",
        "",
    ],
)
def test_an_insane_request_id_is_replaced_by_a_generated_one(
    client: Client, request_id: str
) -> None:
    response = client.get("/api/auth/me", headers={"X-Request-ID": request_id.encode()})
    generated = response.headers["x-request-id"]
    assert GENERATED_ID.match(generated)
    assert error_of(response, 401, "unauthorized")["request_id"] == generated
    assert "x-injected" not in response.headers
    assert "set-cookie" not in response.headers


def test_requests_without_an_id_get_a_fresh_one_each(client: Client) -> None:
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(GENERATED_ID.match(i) for i in ids)


# --- security headers -------------------------------------------------------------------------

_API_CSP = "default-src 'none'; frame-ancestors 'none'"
_HSTS = "max-age=31536000; includeSubDomains"


def assert_security_headers(response: Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/api/auth/me", 401),
        ("GET", "/api/nothing-here", 404),
        ("DELETE", "/healthz", 405),
        ("POST", "/api/auth/register", 422),
    ],
)
def test_every_api_response_carries_the_security_headers(
    client: Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert_security_headers(response)
    assert response.headers["content-security-policy"] == _API_CSP
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_documentation_pages_may_load_their_scripts(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)
    assert "content-security-policy" not in response.headers


def test_hsts_is_sent_only_in_production(build: Build) -> None:
    production = build(quarry_env="production", jwt_secret_key=TEST_SECRET)
    for path in ("/healthz", "/api/auth/me", "/api/nothing-here", "/docs"):
        response = production.get(path)
        assert response.headers["strict-transport-security"] == _HSTS, path
        assert_security_headers(response)
    development = build()
    assert "strict-transport-security" not in development.get("/healthz").headers


# --- CORS -------------------------------------------------------------------------------------


def _preflight(client: Client, origin: str) -> Response:
    return client.http.options(
        "/api/auth/login",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_preflight_from_the_ui_is_allowed(client: Client) -> None:
    response = _preflight(client, UI_ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    assert response.headers["access-control-max-age"] == "600"
    assert_security_headers(response)


def test_cors_preflight_from_another_origin_gets_no_allowance(client: Client) -> None:
    response = _preflight(client, "https://evil.example")
    error = error_of(response, 400, "cors_refused")
    assert error["message"] == "Disallowed CORS origin."
    assert "access-control-allow-origin" not in response.headers


def test_cors_simple_requests_expose_the_request_id_to_the_ui_only(client: Client) -> None:
    allowed = client.get("/healthz", headers={"Origin": UI_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    exposed = {
        h.strip().lower() for h in allowed.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-request-id", "retry-after", "content-disposition"} <= exposed
    other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers


def test_cors_origins_come_from_the_settings(build: Build) -> None:
    client = build(cors_origins=["https://quarry.example.com"])
    assert (
        _preflight(client, "https://quarry.example.com").headers["access-control-allow-origin"]
        == "https://quarry.example.com"
    )
    assert "access-control-allow-origin" not in _preflight(client, UI_ORIGIN).headers


# --- one error shape --------------------------------------------------------------------------


def test_unknown_route_is_a_standard_404(client: Client) -> None:
    error = error_of(client.get("/api/does-not-exist"), 404, "not_found")
    assert error["message"] == "Not Found"


def test_wrong_method_is_a_standard_405_with_allow(client: Client) -> None:
    response = client.delete("/healthz")
    error = error_of(response, 405, "method_not_allowed")
    assert error["message"] == "DELETE is not allowed here; use GET."
    assert response.headers["allow"] == "GET"


def test_missing_token_is_a_standard_401(client: Client) -> None:
    response = client.get("/api/auth/me")
    error = error_of(response, 401, "unauthorized")
    assert error["message"] == "Not authenticated: send 'Authorization: Bearer <access token>'"
    assert response.headers["www-authenticate"] == "Bearer"
    garbage = client.get("/api/auth/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert error_of(garbage, 401, "unauthorized")["message"] == "Invalid or expired access token"


def test_validation_errors_name_the_field(client: Client) -> None:
    response = client.post("/api/auth/register", json={"email": "not-an-email", "password": "x"})
    error = error_of(response, 422, "validation_error")
    assert error["message"].startswith("email: not a valid email address (")
    assert [d["field"] for d in error["details"]] == ["email"]
    assert error["details"][0]["message"] == error["message"][len("email: ") :]


def test_missing_fields_are_each_named(client: Client) -> None:
    error = error_of(client.post("/api/auth/register", json={}), 422, "validation_error")
    assert error["message"] == "email: Field required; password: Field required"
    assert error["details"] == [
        {"field": "email", "message": "Field required"},
        {"field": "password", "message": "Field required"},
    ]


def test_wrong_types_are_validation_errors(client: Client) -> None:
    response = client.post("/api/auth/register", json={"email": 42, "password": ["a", "b"]})
    error = error_of(response, 422, "validation_error")
    assert (
        error["message"]
        == "email: Input should be a valid string; password: Input should be a valid string"
    )
    not_an_object = client.post("/api/auth/register", json=["email", "password"])
    assert error_of(not_an_object, 422, "validation_error")["message"].startswith("body: ")


def test_query_and_path_parameters_are_validated(client: Client) -> None:
    user = client.user()
    bad_limit = client.get("/api/sessions?limit=0", headers=user.headers)
    assert error_of(bad_limit, 422, "validation_error")["message"] == (
        "limit: Input should be greater than or equal to 1"
    )
    bad_id = client.get("/api/sessions/not-a-uuid", headers=user.headers)
    assert error_of(bad_id, 422, "validation_error")["message"].startswith(
        "session_id: Input should be a valid UUID"
    )


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login"])
def test_malformed_json_is_a_422_that_says_so(client: Client, path: str) -> None:
    response = client.post(
        path, content=b'{"email": "a@example.com", ', headers={"Content-Type": "application/json"}
    )
    error = error_of(response, 422, "validation_error")
    assert error["message"].startswith("body: Request body is not valid JSON (")
    assert error["details"][0]["field"] == "body"


def _big_json(size: int) -> bytes:
    filler = "x" * size
    return json.dumps(
        {"email": "big@example.com", "password": PASSWORD, "full_name": filler}
    ).encode()


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login", "/api/nothing-here"])
def test_an_oversized_body_with_content_length_is_refused_with_413(build: Build, path: str) -> None:
    client = build(max_request_body_bytes=1024)
    response = client.post(
        path,
        content=_big_json(2048),
        headers={"Content-Type": "application/json", "X-Request-ID": "big-body-1"},
    )
    error = error_of(response, 413, "payload_too_large")
    assert error == {
        "code": "payload_too_large",
        "message": "Request body is larger than 1 KB.",
        "request_id": "big-body-1",
    }
    assert_security_headers(response)


@pytest.mark.parametrize("path", ["/api/auth/register", "/api/auth/login"])
def test_an_oversized_chunked_body_is_refused_with_413(build: Build, path: str) -> None:
    client = build(max_request_body_bytes=1024)
    body = _big_json(4096)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    response = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    error = error_of(response, 413, "payload_too_large")
    assert error["message"] == "Request body is larger than 1 KB."


def test_an_oversized_chunked_sign_in_form_is_refused_with_413(build: Build) -> None:
    client = build(max_request_body_bytes=1024)
    body = b"username=" + b"a" * 3000 + b"&password=x"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = client.post(
        "/api/auth/login",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert error_of(response, 413, "payload_too_large")["message"] == (
        "Request body is larger than 1 KB."
    )


def test_an_invalid_content_length_is_a_standard_400(client: Client) -> None:
    response = client.post(
        "/api/auth/register",
        headers={"Content-Length": "lots", "Content-Type": "application/json"},
    )
    error = error_of(response, 400, "bad_request")
    assert error["message"] == "Invalid Content-Length"
    assert_security_headers(response)


def test_a_body_under_the_limit_is_accepted(build: Build) -> None:
    client = build(max_request_body_bytes=1024)
    email = f"small-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text


def test_uploads_have_their_own_cap_above_the_json_limit(build: Build) -> None:
    client = build(max_request_body_bytes=1024)
    user = client.user()
    padded = CENSUS_CSV + b"".join(b"%d,1,HS,Private\n" % n for n in range(300))
    assert len(padded) > 4096
    [dataset] = client.upload(user, padded, "wide.csv")["data"]
    assert dataset["status"] in {"processing", "ready"}


def _boom() -> None:
    raise RuntimeError("secret detail")


def test_an_unexpected_exception_is_a_500_without_internals(
    data_dir: Path,
    pg_url: str,
    build: Build,
    capfd: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    app = create_app(make_settings(data_dir, pg_url, log_level="INFO", log_json=True))
    app.add_api_route("/api/boom", _boom, methods=["GET"])
    client = build(app)

    response = client.get("/api/boom", headers={"X-Request-ID": "boom-1"})
    error = error_of(response, 500, "internal_error")
    assert error == {"code": "internal_error", "message": INTERNAL_ERROR, "request_id": "boom-1"}
    for leak in ("secret detail", "RuntimeError", "Traceback", "_boom", ".py"):
        assert leak not in response.text
    assert_security_headers(response)
    # The server keeps working.
    assert client.get("/healthz").status_code == 200

    # The operator finds the cause under the same request id.
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    [crash] = [line for line in lines if line["event"] == "unhandled error"]
    assert crash["request_id"] == "boom-1"
    assert crash["level"] == "error"
    assert "secret detail" in json.dumps(crash["exception"])
    [access] = [
        line for line in lines if line["event"] == "request" and line["request_id"] == "boom-1"
    ]
    assert (access["route"], access["status"]) == ("/api/boom", 500)


# --- logs -------------------------------------------------------------------------------------


def _log_lines(capfd: pytest.CaptureFixture[str]) -> tuple[str, list[dict[str, Any]]]:
    captured = capfd.readouterr()
    text = captured.out + captured.err
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    return text, lines


def test_each_request_writes_one_json_access_line(
    build: Build, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    client = build(log_level="INFO", log_json=True)
    user = client.user()
    capfd.readouterr()

    client.get("/api/auth/me", headers={"X-Request-ID": "anon-1"})
    client.get("/api/auth/me", headers={**user.headers, "X-Request-ID": "known-1"})
    client.get(f"/api/sessions/{uuid.uuid4()}", headers={**user.headers, "X-Request-ID": "known-2"})

    _text, lines = _log_lines(capfd)
    access = {line["request_id"]: line for line in lines if line["event"] == "request"}
    assert sorted(access) == ["anon-1", "known-1", "known-2"]
    assert len([line for line in lines if line["event"] == "request"]) == 3

    anonymous = access["anon-1"]
    assert {k: anonymous[k] for k in ("method", "path", "route", "status", "user_id")} == {
        "method": "GET",
        "path": "/api/auth/me",
        "route": "/api/auth/me",
        "status": 401,
        "user_id": None,
    }
    assert anonymous["logger"] == "quarry.access"
    assert anonymous["level"] == "info"
    assert isinstance(anonymous["duration_ms"], float | int)
    assert anonymous["duration_ms"] >= 0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", anonymous["timestamp"])

    assert access["known-1"]["user_id"] == user.id
    assert access["known-1"]["status"] == 200
    assert access["known-2"]["user_id"] == user.id
    assert access["known-2"]["route"] == "/api/sessions/{session_id}"
    assert access["known-2"]["status"] == 404


def test_probes_are_not_logged_at_info_unless_they_fail(
    build: Build, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    client = build(log_level="INFO", log_json=True)
    capfd.readouterr()
    client.get("/healthz")
    client.get("/readyz")
    client.get("/metrics")
    _text, lines = _log_lines(capfd)
    assert [line for line in lines if line["event"] == "request"] == []

    broken = build(database_url=UNREACHABLE_DATABASE, log_level="INFO", log_json=True)
    capfd.readouterr()
    broken.get("/readyz", headers={"X-Request-ID": "not-ready"})
    _text, lines = _log_lines(capfd)
    [line] = [line for line in lines if line["event"] == "request"]
    assert (line["request_id"], line["route"], line["status"]) == ("not-ready", "/readyz", 503)


def test_passwords_and_tokens_never_reach_the_logs(
    build: Build, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    client = build(log_level="DEBUG", log_json=True)
    password = f"unique-pass-{uuid.uuid4().hex}"
    email = f"logs-{uuid.uuid4().hex[:8]}@example.com"
    client.register(email, password)
    json_tokens = client.login(email, password)
    form = client.post("/api/auth/login", data={"username": email, "password": password})
    assert form.status_code == 200
    refreshed = client.post(
        "/api/auth/refresh", json={"refresh_token": json_tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    me = client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {json_tokens['access_token']}"}
    )
    assert me.status_code == 200
    wrong = client.post("/api/auth/login", json={"email": email, "password": password + "-typo"})
    assert wrong.status_code == 401

    text, lines = _log_lines(capfd)
    assert len([line for line in lines if line["event"] == "request"]) >= 6
    secrets = [
        password,
        password + "-typo",
        json_tokens["access_token"],
        json_tokens["refresh_token"],
        form.json()["access_token"],
        form.json()["refresh_token"],
        refreshed.json()["access_token"],
        refreshed.json()["refresh_token"],
    ]
    for secret in secrets:
        assert secret not in text
    assert "Bearer " not in text
    assert "authorization" not in text.lower()


def test_a_crash_during_sign_in_leaks_no_secret_into_the_logs(
    client: Client, build: Build, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """A database outage answers 503 (retry later) and is logged with the driver's reason;
    neither the answer nor the log may carry the password being checked, the bearer token
    or the DSN's password."""
    user = client.user()
    access_token = user.tokens["access_token"]
    db_password = f"db-{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex[:12]}"  # as long as people type
    outage = build(
        database_url=f"postgresql://postgres:{db_password}@127.0.0.1:1/x",
        log_level="INFO",
        log_json=True,
    )
    capfd.readouterr()

    login = outage.post(
        "/api/auth/login",
        json={"email": "a@b.co", "password": password},
        headers={"X-Request-ID": "outage-login"},
    )
    assert error_of(login, 503, "database_unavailable")["message"] == DATABASE_UNAVAILABLE
    assert login.headers["retry-after"] == "2"
    me = outage.get("/api/auth/me", headers={**user.headers, "X-Request-ID": "outage-me"})
    assert error_of(me, 503, "database_unavailable")["message"] == DATABASE_UNAVAILABLE

    text, lines = _log_lines(capfd)
    outages = {
        line["request_id"]: line for line in lines if line["event"] == "database unavailable"
    }
    assert sorted(outages) == ["outage-login", "outage-me"]
    for line in outages.values():
        # The operator still learns what went wrong ...
        assert line["error"] == "OperationalError"
        assert "Connection refused" in line["detail"]
    # ... but not what the user typed, what they signed in with, or how to reach the database.
    assert password not in text
    assert db_password not in text
    assert access_token.split(".")[1][:24] not in text
    assert access_token.split(".")[2] not in text


def test_secret_fields_are_redacted_whoever_logs_them(
    capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("INFO", json_logs=True)
    capfd.readouterr()
    get_logger("quarry.test").info(
        "signing in",
        password="hunter2-plain",
        refresh_token="rt-plain",
        access_token="at-plain",
        token="t-plain",
        api_key="key-plain",
        OPENAI_API_KEY="sk-plain",
        Authorization="Bearer ab-plain",
        cookie="c-plain",
        jwt_secret="s-plain",
        email="ada@example.com",
        token_count=3,
        missing_token=None,
    )
    text, lines = _log_lines(capfd)
    [line] = [line for line in lines if line["event"] == "signing in"]
    for key in (
        "password",
        "refresh_token",
        "access_token",
        "token",
        "api_key",
        "OPENAI_API_KEY",
        "Authorization",
        "cookie",
        "jwt_secret",
    ):
        assert line[key] == "[redacted]", key
    assert line["email"] == "ada@example.com"
    assert line["token_count"] == 3
    assert line["missing_token"] is None
    assert "plain" not in text


# --- OpenAPI ----------------------------------------------------------------------------------


def test_openapi_documents_every_route_with_a_tag_and_a_summary(client: Client) -> None:
    document = client.get("/openapi.json").json()
    declared_tags = {tag["name"] for tag in document["tags"]}
    assert declared_tags == {"auth", "datasets", "sessions", "runs", "visualizations", "health"}
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert documented == set(api_routes())
    for method, path in api_routes():
        operation = document["paths"][path][method.lower()]
        assert operation["tags"], (method, path)
        assert set(operation["tags"]) <= declared_tags, (method, path)
        assert operation.get("summary"), (method, path)


def test_openapi_login_accepts_json_and_the_oauth2_form(client: Client) -> None:
    document = client.get("/openapi.json").json()
    body = document["paths"]["/api/auth/login"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "application/x-www-form-urlencoded"}
    form = body["content"]["application/x-www-form-urlencoded"]["schema"]
    assert set(form["required"]) == {"username", "password"}
    scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/auth/login"


def test_the_oauth2_password_form_signs_in_like_json(client: Client) -> None:
    created = client.register()
    form = client.post("/api/auth/login", data={"username": created["email"], "password": PASSWORD})
    assert form.status_code == 200, form.text
    tokens = form.json()
    assert set(tokens) == set(client.login(created["email"]))
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["id"] == created["id"]

    wrong_form = client.post(
        "/api/auth/login", data={"username": created["email"], "password": "not it at all"}
    )
    wrong_json = client.post(
        "/api/auth/login", json={"email": created["email"], "password": "not it at all"}
    )
    assert error_of(wrong_form, 401, "unauthorized")["message"] == "Incorrect email or password"
    assert error_of(wrong_json, 401, "unauthorized")["message"] == "Incorrect email or password"
