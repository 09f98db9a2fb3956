"""Shared fixtures. Tests run against a real PostgreSQL (a fresh database per test run,
migrated with Alembic) and, where they use it, a real Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from api.config import Settings
from api.main import create_app
from api.prestart import alembic_config
from tests.factories import Client

ADMIN_URL = os.environ.get(
    "QUARRY_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("QUARRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_SECRET = "test-only-signing-key-" + "k" * 40


def _admin_engine() -> Engine:
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def create_database(prefix: str = "quarry_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin_engine().connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    with _admin_engine().connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, at the newest migration."""
    from alembic import command

    url = create_database()
    command.upgrade(alembic_config(url), "head")
    yield url
    drop_database(url)


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret_key": TEST_SECRET,
        # argon2id still, with test-sized cost (the production cost is exercised by the
        # rehash test and `make bench`).
        "argon2_time_cost": 1,
        "argon2_memory_cost_kib": 1024,
        "argon2_parallelism": 1,
        "register_max_per_ip_per_hour": 10_000,
        "login_max_failures_per_ip": 10_000,
        "log_level": "WARNING",
        "log_json": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path, pg_url: str) -> Settings:
    return make_settings(data_dir, pg_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[Client]:
    with TestClient(app) as test_client:
        yield Client(test_client)


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - .ci/run starts Redis
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield REDIS_URL
    client.close()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url, poolclass=NullPool)
    yield engine
    engine.dispose()
