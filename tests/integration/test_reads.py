"""The hot read path (prepared statements on the read engine) answers exactly like the plain
one, and survives the database dropping its connections."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.main import create_app
from api.prepared import _REGISTRY
from tests.conftest import make_settings
from tests.factories import Client, User


def _fill(client: Client, user: User) -> list[str]:
    census = client.ready_dataset(user)
    weather = client.ready_dataset(user, b"city,temp\nOslo,4\nRome,18\n", "weather.csv")
    ids = [
        client.session(user, [census["id"], weather["id"]], title="both")["id"],
        client.session(user, [weather["id"]], title="weather only")["id"],
        client.session(user, title="empty")["id"],
    ]
    client.delete(f"/api/datasets/{weather['id']}", headers=user.headers)
    return ids


def _answers(client: Client, user: User, ids: list[str]) -> list[object]:
    pages = [
        client.get(f"/api/sessions?limit={limit}&offset={offset}", headers=user.headers).json()
        for limit, offset in ((50, 0), (2, 0), (2, 2), (2, 10))
    ]
    singles = [client.get(f"/api/sessions/{i}", headers=user.headers).json() for i in ids]
    return [*pages, *singles]


def test_prepared_and_plain_reads_answer_the_same(data_dir: Path, pg_url: str) -> None:
    with TestClient(create_app(make_settings(data_dir, pg_url))) as http:
        client = Client(http)
        user = client.user()
        ids = _fill(client, user)
        prepared = _answers(client, user, ids)
    plain_settings = make_settings(data_dir, pg_url, db_prepared_statements=False)
    with TestClient(create_app(plain_settings)) as http:
        plain = _answers(Client(http), user, ids)
    assert prepared == plain
    first_page = prepared[0]
    assert isinstance(first_page, dict)
    assert first_page["count"] == 3
    both = next(s for s in first_page["data"] if s["title"] == "both")
    assert [(d["name"], d["status"]) for d in both["datasets"]] == [
        ("census", "ready"),
        ("weather", "deleted"),
    ]
    assert prepared[3] == {"data": [], "count": 3, "limit": 2, "offset": 10}


def test_every_prepared_statement_is_installed_on_read_connections(
    client: Client, pg_engine: Engine
) -> None:
    user = client.user()
    assert client.get("/api/sessions", headers=user.headers).status_code == 200
    with pg_engine.connect() as conn:
        # prepared statements are per connection: look at the API's read connections
        rows = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'quarry' AND datname = current_database()"
            )
        ).scalar_one()
    assert rows >= 1
    assert {p.name for p in _REGISTRY} >= {
        "quarry_principal",
        "quarry_session_one",
        "quarry_session_page",
        "quarry_session_count",
    }


def test_a_database_restart_costs_at_most_one_retryable_answer(
    client: Client, pg_engine: Engine
) -> None:
    user = client.user()
    session = client.session(user)
    url = f"/api/sessions/{session['id']}"
    assert client.get(url, headers=user.headers).status_code == 200

    with pg_engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'quarry' AND datname = current_database()"
            )
        ).scalar_one()
    assert killed >= 1

    # The pooled read connection is dead: this request learns it and says "retry".
    first = client.get(url, headers=user.headers)
    assert first.status_code == 503
    assert first.json()["error"]["code"] == "database_unavailable"
    assert first.headers["retry-after"] == "2"
    for _ in range(3):
        assert client.get(url, headers=user.headers).status_code == 200
