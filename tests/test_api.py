"""The API as the exam brief checks it: health, register, login, upload, sessions, 401s."""

from __future__ import annotations

from jose import jwt
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.models import User as UserRow
from tests.conftest import TEST_SECRET
from tests.factories import CENSUS_CSV, PASSWORD, Client, api_routes


def test_health_endpoints_answer(client: Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_register_stores_an_argon2id_hash_not_the_password(
    client: Client, pg_engine: Engine
) -> None:
    created = client.register("Grace.Hopper@Example.COM ")
    assert created["email"] == "grace.hopper@example.com"
    assert "password" not in created
    assert "hashed_password" not in created
    with Session(pg_engine) as db:
        row = db.scalars(select(UserRow).where(UserRow.email == created["email"])).one()
    assert row.hashed_password.startswith("$argon2id$")
    assert PASSWORD not in row.hashed_password


def test_login_returns_expiring_jwts(client: Client) -> None:
    created = client.register()
    tokens = client.login(created["email"])
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60
    assert tokens["refresh_expires_in"] == 7 * 24 * 3600
    claims = jwt.decode(tokens["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == created["id"]
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert {"jti", "iat", "exp"} <= set(claims)
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "HS256"


def test_upload_dataset_then_open_a_session_on_it(client: Client) -> None:
    user = client.user()
    dataset = client.ready_dataset(user, CENSUS_CSV, "census.csv")
    assert (dataset["row_count"], dataset["column_count"]) == (8, 4)
    ages = next(c for c in dataset["profile"]["columns"] if c["name"] == "age")
    assert ages["mean"] == 42.5
    session = client.session(user, [dataset["id"]])
    assert session["title"] == "Analysis of census"
    assert [d["id"] for d in session["datasets"]] == [dataset["id"]]


def test_protected_endpoints_refuse_requests_without_a_token(client: Client) -> None:
    public = ("/api/auth/login", "/api/auth/register", "/api/auth/refresh", "/api/auth/fork")
    paths = [
        (method, path)
        for method, path in api_routes()
        if path.startswith("/api/") and not path.startswith(public)
    ]
    assert len(paths) >= 15
    zero = "00000000-0000-0000-0000-000000000000"
    for method, path in paths:
        url = path.replace("{dataset_id}", zero).replace("{session_id}", zero)
        url = url.replace("{run_id}", zero).replace("{visualization_id}", zero)
        response = client.request(method, url)
        assert response.status_code == 401, (method, url, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
