"""Shared fixtures. Tests run against a real PostgreSQL (a fresh database per test run,
migrated with Alembic) and, where they use it, a real Redis."""

from __future__ import annotations

import os
import threading
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
from api.db import make_engine, make_sessionmaker
from api.main import create_app
from api.prestart import alembic_config
from api.queue import CONVERT_UPLOAD, TaskQueue
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


class InProcessDatasetQueue(TaskQueue):
    """The API's queue in tests that start no Celery worker: `worker.tasks.convert_upload`
    runs in a background thread of the test process instead of going to the broker.

    What it replaces: in production the upload route sends `convert_upload(upload_id)` to
    the `datasets` queue and a Celery worker converts the upload. Why: most tests upload a
    file only to get a ready dataset, and starting worker processes for each of them would
    cost seconds per test. What stays real: the call is the very function the task runs
    (`worker.datasets.convert_upload`: claim, capped converter subprocess, heartbeat,
    conditional settle), on its own database engine like a worker's, after the request
    returned, so a dataset still goes `processing` -> `ready`/`failed` asynchronously. Every
    other task goes to the broker as before. Closing waits for conversions still running,
    as a worker's warm shutdown does. tests/test_dataset_worker.py drives the real queue
    with Celery worker processes (tests that use `stack_factory` get the real queue)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._settings = settings
        self._engine = make_engine(settings)
        self._factory = make_sessionmaker(self._engine)
        self._threads: list[threading.Thread] = []

    def send(self, task: str, *args: Any, request_id: str | None = None) -> bool:
        if task != CONVERT_UPLOAD:
            return super().send(task, *args, request_id=request_id)
        from worker.datasets import convert_upload

        thread = threading.Thread(
            target=convert_upload,
            args=(args[0], self._settings, self._factory),
            name="test-convert-upload",
            daemon=True,
        )
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        return True

    def close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=120)
        self._engine.dispose()
        super().close()


_real_queue = threading.Event()  # set while a test runs real Celery workers


def _app_queue(settings: Settings) -> TaskQueue:
    return TaskQueue(settings) if _real_queue.is_set() else InProcessDatasetQueue(settings)


@pytest.fixture(scope="session", autouse=True)
def _datasets_in_process() -> Iterator[None]:
    """Every app the tests build (the `app`/`client` fixtures, module-scoped fixtures, or
    `create_app` called directly) converts uploads in-process (InProcessDatasetQueue)..."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("api.main.TaskQueue", _app_queue)
        yield


@pytest.fixture(autouse=True)
def _real_queue_for_workers(request: pytest.FixtureRequest) -> Iterator[None]:
    """... except the apps of a test that starts real workers (`stack_factory`)."""
    if "stack_factory" not in request.fixturenames:
        yield
        return
    _real_queue.set()
    try:
        yield
    finally:
        _real_queue.clear()


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
