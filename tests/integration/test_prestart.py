"""`python -m api.prestart`: waits for the database, then migrates it; fails clearly when
the database never comes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from api.config import Settings
from api.prestart import alembic_config, wait_for_database
from tests.conftest import create_database, drop_database, make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_prestart_migrates_an_empty_postgres_database(tmp_path: Path) -> None:
    url = create_database("quarry_prestart")
    try:
        env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
        done = subprocess.run(
            [sys.executable, "-m", "api.prestart"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        engine = create_engine(url)
        assert {"users", "datasets", "analysis_sessions", "alembic_version"} <= set(
            inspect(engine).get_table_names()
        )
        engine.dispose()
    finally:
        drop_database(url)


def test_prestart_creates_the_embedded_database(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"}
    env["DATABASE_URL"] = ""  # empty: the embedded SQLite file (and no .env may override it)
    done = subprocess.run(
        [sys.executable, "-m", "api.prestart"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "data" / "quarry.db").exists()


def test_waiting_for_a_database_that_never_comes_fails_with_the_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "postgresql://postgres@127.0.0.1:1/nothing")
    started = time.monotonic()
    with pytest.raises(SystemExit, match="database unreachable after 2s"):
        wait_for_database(settings, timeout_s=2)
    assert time.monotonic() - started < 10


def test_wait_mode_waits_for_someone_else_to_migrate() -> None:
    """`--wait` (the chart's init containers) migrates nothing and returns once at head."""
    from api.prestart import at_head

    url = create_database("quarry_prestart_wait")
    try:
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        assert at_head(settings) is False
        command.upgrade(alembic_config(url), "head")
        assert at_head(settings) is True
        done = subprocess.run(
            [sys.executable, "-m", "api.prestart", "--wait"],
            env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        drop_database(url)
