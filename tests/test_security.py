"""Security as the exam brief checks it: SQL injection, tokens, upload limits, secrets.

(The sandbox half of the brief's security tests arrives with the sandbox.)
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.main import create_app
from api.models import Dataset
from api.models import User as UserRow
from tests.builders import zip_bytes
from tests.conftest import TEST_SECRET, make_settings
from tests.factories import CENSUS_CSV, PASSWORD, Client, User

INJECTIONS = [
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    "1; DELETE FROM datasets WHERE 1=1; --",
    '" OR ""="',
    "x' UNION SELECT hashed_password FROM users --",
    "%' AND pg_sleep(5) --",
]


def _tables_intact(engine: Engine) -> dict[str, int]:
    with Session(engine) as db:
        return {
            table: int(db.scalar(text(f"SELECT count(*) FROM {table}")) or 0)  # noqa: S608
            for table in ("users", "datasets", "analysis_sessions", "messages", "runs")
        }


@pytest.mark.parametrize("payload", INJECTIONS)
def test_sql_injection_in_every_text_field_is_stored_as_text(
    client: Client, pg_engine: Engine, payload: str
) -> None:
    user = client.user()
    before = _tables_intact(pg_engine)

    # sign-in fields
    login = client.post("/api/auth/login", json={"email": payload, "password": payload})
    assert login.status_code == 401
    login = client.post("/api/auth/login", json={"email": user.email, "password": payload})
    assert login.status_code == 401
    register = client.post("/api/auth/register", json={"email": payload, "password": PASSWORD})
    assert register.status_code == 422
    named = client.post(
        "/api/auth/register",
        json={
            "email": f"n-{uuid.uuid4().hex[:8]}@example.com",
            "password": PASSWORD,
            "full_name": payload,
        },
    )
    assert named.status_code == 201
    assert named.json()["full_name"] == payload

    # dataset name and description (multipart fields), then a rename
    started = time.perf_counter()
    [dataset] = client.upload(user, CENSUS_CSV, "census.csv", name=payload, description=payload)[
        "data"
    ]
    assert time.perf_counter() - started < 4  # pg_sleep never ran
    assert dataset["name"] == payload
    assert dataset["description"] == payload
    renamed = client.patch(
        f"/api/datasets/{dataset['id']}", headers=user.headers, json={"name": payload + "!"}
    )
    assert renamed.json()["name"] == payload + "!"

    # session title and a message
    session = client.session(user, [dataset["id"]], title=payload)
    assert session["title"] == payload
    sent = client.post(
        f"/api/sessions/{session['id']}/messages", headers=user.headers, json={"content": payload}
    )
    assert sent.status_code == 202
    assert sent.json()["message"]["content"] == payload

    # query strings and path segments
    assert client.get(f"/api/datasets?status={payload}", headers=user.headers).status_code == 422
    assert client.get(f"/api/sessions/{payload}", headers=user.headers).status_code == 422

    after = _tables_intact(pg_engine)
    assert after["users"] == before["users"] + 1
    assert after["datasets"] == before["datasets"] + 1
    assert after["analysis_sessions"] == before["analysis_sessions"] + 1
    assert after["messages"] == before["messages"] + 1


# --- tokens ------------------------------------------------------------------------------------


def _forge(claims: dict[str, object], key: str = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _claims(user: User, **changes: object) -> dict[str, object]:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "sub": user.id,
        "jti": str(uuid.uuid4()),
        "type": "access",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "ver": 0,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def _unsigned(claims: dict[str, object]) -> str:
    import base64
    import json

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def test_a_correctly_forged_token_is_accepted_proving_the_checks_below_are_real(
    client: Client,
) -> None:
    user = client.user()
    token = _forge(_claims(user))
    assert (
        client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda u: _forge(_claims(u, exp=int(time.time()) - 5)), id="expired"),
        pytest.param(lambda u: _forge(_claims(u), key="another-key-" + "z" * 40), id="wrong-key"),
        pytest.param(lambda u: _unsigned(_claims(u)), id="alg-none"),
        pytest.param(lambda u: _forge(_claims(u), alg="HS512"), id="other-hmac-alg"),
        pytest.param(lambda u: _forge(_claims(u, type="refresh")), id="refresh-as-access"),
        pytest.param(lambda u: _forge(_claims(u, type=None)), id="no-type"),
        pytest.param(lambda u: _forge(_claims(u, jti=None)), id="no-jti"),
        pytest.param(lambda u: _forge(_claims(u, exp=None)), id="no-exp"),
        pytest.param(lambda u: _forge(_claims(u, sub="not-a-uuid")), id="bad-sub"),
        pytest.param(lambda u: _forge(_claims(u, sub=str(uuid.uuid4()))), id="unknown-user"),
        pytest.param(lambda u: _forge(_claims(u, ver=1)), id="stale-version"),
        pytest.param(
            lambda u: (
                u.tokens["access_token"][:-3]
                + ("AAA" if u.tokens["access_token"][-3:] != "AAA" else "BBB")
            ),
            id="tampered-signature",
        ),
        pytest.param(
            lambda u: (
                u.tokens["access_token"].split(".")[0]
                + "."
                + _forge(_claims(u, sub=str(uuid.uuid4()))).split(".")[1]
                + "."
                + u.tokens["access_token"].split(".")[2]
            ),
            id="tampered-payload",
        ),
        pytest.param(lambda u: "garbage", id="garbage"),
        pytest.param(lambda u: "a" * 5000, id="huge"),
    ],
)
def test_bad_tokens_are_refused(client: Client, make_token) -> None:  # type: ignore[no-untyped-def]
    user = client.user()
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {make_token(user)}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_other_authorization_schemes_are_refused(client: Client) -> None:
    user = client.user()
    token = user.tokens["access_token"]
    for header in (f"Basic {token}", token, f"Bearer  {token} extra", "Bearer"):
        assert client.get("/api/auth/me", headers={"Authorization": header}).status_code == 401


# --- upload limits ----------------------------------------------------------------------------


def _no_dataset_rows(engine: Engine, user: User) -> bool:
    with Session(engine) as db:
        count = db.scalar(
            select(func.count()).select_from(Dataset).where(Dataset.user_id == uuid.UUID(user.id))
        )
    return count == 0


def test_upload_over_the_size_cap_answers_413_and_keeps_nothing(
    data_dir: Path, pg_url: str, pg_engine: Engine
) -> None:
    with TestClient(create_app(make_settings(data_dir, pg_url, max_upload_mb=1))) as http:
        client = Client(http)
        user = client.user()
        big = b"a,b\n" + b"1,2\n" * 400_000  # 1.6 MB
        response = client.upload(user, big, "big.csv", expect=413)
        assert "1 MB" in response["error"]["message"]
    assert _no_dataset_rows(pg_engine, user)
    assert list((data_dir / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    ("filename", "content", "status", "fragment"),
    [
        ("bomb.zip", zip_bytes({"zeros.csv": b"0" * (300 << 20)}), 422, "ZIP bomb"),
        ("evil.zip", zip_bytes({"../../etc/cron.d/x.csv": CENSUS_CSV}), 422, "unsafe path"),
        ("abs.zip", zip_bytes({"/etc/passwd.csv": CENSUS_CSV}), 422, "unsafe path"),
        (
            "wide.csv",
            (",".join(f"c{i}" for i in range(100_000)) + "\n").encode() * 2,
            422,
            "columns",
        ),
        ("junk.csv", bytes(range(256)) * 64, 422, "text"),
        ("empty.csv", b"", 422, "empty"),
        ("script.exe", b"MZ\x90\x00", 415, "not a supported file type"),
    ],
)
def test_hostile_uploads_get_a_clear_4xx_and_change_nothing(
    client: Client,
    pg_engine: Engine,
    data_dir: Path,
    filename: str,
    content: bytes,
    status: int,
    fragment: str,
) -> None:
    user = client.user()
    body = client.upload(user, content, filename, expect=status)
    assert fragment in body["error"]["message"]
    assert body["error"]["request_id"]
    assert _no_dataset_rows(pg_engine, user)
    assert list((data_dir / "uploads").iterdir()) == []


# --- secrets ---------------------------------------------------------------------------------


def test_no_secret_reaches_a_response(client: Client, pg_url: str) -> None:
    user = client.user()
    bodies = [
        client.get("/readyz").text,
        client.get("/api/auth/me", headers=user.headers).text,
        client.get("/openapi.json").text,
        client.get("/metrics").text,
        client.post("/api/auth/login", json={"email": user.email, "password": "x"}).text,
    ]
    for body in bodies:
        assert TEST_SECRET not in body
        assert pg_url not in body
        assert PASSWORD not in body
        assert "hashed_password" not in body
        assert "$argon2" not in body


def test_passwords_are_never_stored_or_logged_in_clear(
    client: Client, pg_engine: Engine, capfd: pytest.CaptureFixture[str]
) -> None:
    user = client.user()
    with Session(pg_engine) as db:
        row = db.scalars(select(UserRow).where(UserRow.email == user.email)).one()
        assert row.hashed_password != PASSWORD
        dump = " ".join(str(v) for v in db.execute(text("SELECT * FROM audit_events")).all())
    assert PASSWORD not in dump
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err
    assert user.tokens["access_token"] not in out + err
