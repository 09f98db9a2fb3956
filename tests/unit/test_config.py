"""Settings as an operator meets them (environment, `.env`, production refusals, the dev
signing key) and the column types every model relies on (UUIDv7 ids, aware timestamps)."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError

from api.config import Settings
from api.db import UTCDateTime, new_id

STRONG_KEY = "a-strong-production-signing-key-" + "x" * 31
# Every variable these tests set, so that the developer's own environment cannot leak in.
_VARIABLES = (
    "QUARRY_ENV",
    "DEBUG",
    "DATA_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET_KEY",
    "CORS_ORIGINS",
    "ACCESS_TOKEN_TTL_MINUTES",
    "REFRESH_TOKEN_TTL_DAYS",
    "MAX_REQUEST_BODY_BYTES",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def production_env(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    monkeypatch.setenv("QUARRY_ENV", "production")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


# --- production refuses weak settings ---------------------------------------------------------


def test_production_refuses_to_start_without_a_jwt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch)
    with pytest.raises(
        ValidationError, match="refusing to start in production: JWT_SECRET_KEY is not set"
    ):
        settings()


def test_production_refuses_an_empty_jwt_key(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch, JWT_SECRET_KEY="")
    with pytest.raises(ValidationError, match="JWT_SECRET_KEY is not set"):
        settings()


@pytest.mark.parametrize("placeholder", ["changethis", "CHANGETHIS", "change-me", "secret"])
def test_production_refuses_a_placeholder_jwt_key(
    monkeypatch: pytest.MonkeyPatch, placeholder: str
) -> None:
    production_env(monkeypatch, JWT_SECRET_KEY=placeholder)
    with pytest.raises(ValidationError, match="JWT_SECRET_KEY is a placeholder value"):
        settings()


def test_production_refuses_a_key_shorter_than_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch, JWT_SECRET_KEY="k" * 31)
    with pytest.raises(ValidationError, match="JWT_SECRET_KEY is shorter than 32 bytes") as info:
        settings()
    # The message tells the operator how to make a good one.
    assert "secrets.token_urlsafe(48)" in str(info.value)


def test_production_accepts_a_key_of_exactly_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch, JWT_SECRET_KEY="k" * 32)
    assert settings().jwt_key() == "k" * 32


def test_production_refuses_a_wildcard_cors_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(
        monkeypatch, JWT_SECRET_KEY=STRONG_KEY, CORS_ORIGINS="https://quarry.example.com,*"
    )
    with pytest.raises(ValidationError, match="CORS_ORIGINS contains '\\*'"):
        settings()


def test_production_refuses_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch, JWT_SECRET_KEY=STRONG_KEY, DEBUG="true")
    with pytest.raises(ValidationError, match="refusing to start in production: DEBUG is on"):
        settings()


def test_production_lists_every_problem_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    production_env(monkeypatch, JWT_SECRET_KEY="changethis", CORS_ORIGINS="*", DEBUG="1")
    with pytest.raises(ValidationError) as info:
        settings()
    assert (
        "refusing to start in production: JWT_SECRET_KEY is a placeholder value; "
        "CORS_ORIGINS contains '*'; list the UI's origins instead; DEBUG is on"
    ) in str(info.value)


def test_production_accepts_a_strong_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_urlsafe(48)
    production_env(
        monkeypatch,
        JWT_SECRET_KEY=key,
        CORS_ORIGINS="https://quarry.example.com",
        DATABASE_URL="postgresql://quarry:pw@db:5432/quarry",
        REDIS_URL="redis://redis:6379/0",
    )
    configured = settings()
    assert configured.quarry_env == "production"
    assert configured.debug is False
    assert configured.jwt_key() == key
    assert configured.cors_origins == ["https://quarry.example.com"]
    assert configured.redis_url == "redis://redis:6379/0"
    # The key is a secret: it does not show in the settings' repr (which ends up in logs).
    assert key not in repr(configured)


def test_development_accepts_what_production_refuses() -> None:
    configured = settings(jwt_secret_key="changethis", cors_origins="*", debug=True)
    assert configured.quarry_env == "development"
    assert configured.jwt_key() == "changethis"
    assert configured.cors_origins == ["*"]


# --- parsing --------------------------------------------------------------------------------


def test_cors_origins_are_read_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CORS_ORIGINS", " https://quarry.example.com , http://localhost:8501,,https://b.example "
    )
    assert settings().cors_origins == [
        "https://quarry.example.com",
        "http://localhost:8501",
        "https://b.example",
    ]


def test_cors_origins_default_to_the_ui() -> None:
    assert settings().cors_origins == ["http://localhost:8501"]


def test_database_url_defaults_to_a_sqlite_file_under_data_dir(tmp_path: Path) -> None:
    configured = settings(data_dir=tmp_path / "state")
    assert configured.database_url == ""
    assert configured.sqlalchemy_url == f"sqlite:///{tmp_path.resolve()}/state/quarry.db"
    assert configured.is_embedded_database is True


def test_default_data_dir_is_dot_data_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    configured = settings()
    assert configured.data_dir == Path(".data")
    assert configured.sqlalchemy_url == f"sqlite:///{tmp_path.resolve()}/.data/quarry.db"


def test_data_dir_from_the_environment_moves_the_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    assert settings().sqlalchemy_url == f"sqlite:///{tmp_path.resolve()}/elsewhere/quarry.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/quarry", "postgresql+psycopg2://u:p@db:5432/quarry"),
        ("postgresql://u:p@db:5432/quarry", "postgresql+psycopg2://u:p@db:5432/quarry"),
        (
            "postgresql+psycopg2://u:p@db:5432/quarry",
            "postgresql+psycopg2://u:p@db:5432/quarry",
        ),
        ("sqlite:////var/lib/quarry/q.db", "sqlite:////var/lib/quarry/q.db"),
    ],
)
def test_database_urls_are_mapped_to_the_psycopg2_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    configured = settings()
    assert configured.sqlalchemy_url == expected
    assert configured.is_embedded_database is expected.startswith("sqlite")


def test_values_are_read_from_a_dotenv_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# written by an operator\n"
        "DATABASE_URL=postgres://quarry:pw@db:5432/quarry\n"
        "REDIS_URL=redis://redis:6379/0\n"
        "CORS_ORIGINS=https://a.example,https://b.example\n"
        "ACCESS_TOKEN_TTL_MINUTES=30\n"
        f"DATA_DIR={tmp_path / 'from-dotenv'}\n"
        "SOMETHING_UNRELATED=ignored\n",
        encoding="utf-8",
    )
    configured = Settings(_env_file=env_file)
    assert configured.sqlalchemy_url == "postgresql+psycopg2://quarry:pw@db:5432/quarry"
    assert configured.redis_url == "redis://redis:6379/0"
    assert configured.cors_origins == ["https://a.example", "https://b.example"]
    assert configured.access_token_ttl_minutes == 30
    assert configured.data_dir == tmp_path / "from-dotenv"


def test_environment_variables_win_over_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ACCESS_TOKEN_TTL_MINUTES=30\nREFRESH_TOKEN_TTL_DAYS=3\n")
    monkeypatch.setenv("ACCESS_TOKEN_TTL_MINUTES", "5")
    configured = Settings(_env_file=env_file)
    assert configured.access_token_ttl_minutes == 5
    assert configured.refresh_token_ttl_days == 3


def test_a_weak_production_dotenv_is_refused(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("QUARRY_ENV=production\nJWT_SECRET_KEY=changethis\n")
    with pytest.raises(ValidationError, match="JWT_SECRET_KEY is a placeholder value"):
        Settings(_env_file=env_file)


def test_token_lifetimes_default_to_15_minutes_and_7_days() -> None:
    configured = settings()
    assert (configured.access_token_ttl_minutes, configured.refresh_token_ttl_days) == (15, 7)


# --- the development signing key --------------------------------------------------------------


def test_development_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    with pytest.warns(UserWarning, match="JWT_SECRET_KEY is not set"):
        key = settings(data_dir=data_dir).jwt_key()
    path = data_dir / "dev-jwt-secret"
    assert path.read_text() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 64
    # Another Settings object on the same directory (a restarted API) signs with the same key.
    assert settings(data_dir=data_dir).jwt_key() == key
    assert settings(data_dir=Path(os.path.relpath(data_dir))).jwt_key() == key
    # Only the key is left behind, no temporary files.
    assert sorted(p.name for p in data_dir.iterdir()) == ["dev-jwt-secret"]


def test_development_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="JWT_SECRET_KEY is not set"):
        first = settings(data_dir=tmp_path / "one").jwt_key()
    with pytest.warns(UserWarning, match="JWT_SECRET_KEY is not set"):
        second = settings(data_dir=tmp_path / "two").jwt_key()
    assert first != second


def test_an_existing_development_key_is_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "dev-jwt-secret").write_text("kept-from-last-run\n")
    with pytest.warns(UserWarning, match="JWT_SECRET_KEY is not set"):
        key = settings(data_dir=data_dir).jwt_key()
    assert key == "kept-from-last-run"


_KEY_SCRIPT = """
import sys
from pathlib import Path
from api.config import Settings
settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
print(settings.jwt_key(), flush=True)
"""


def test_processes_starting_together_agree_on_one_development_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    env = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    processes = [
        subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", _KEY_SCRIPT, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
        for _ in range(4)
    ]
    try:
        for process in processes:  # every process has imported and built its settings
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:  # ... then all ask for the key at the same moment
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        keys = []
        for process in processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            keys.append(out.strip())
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    stored = (data_dir / "dev-jwt-secret").read_text()
    assert keys == [stored] * len(processes)
    assert stat.S_IMODE((data_dir / "dev-jwt-secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == ["dev-jwt-secret"]


# --- api/db.py: ids and timestamps -------------------------------------------------------------


def test_new_id_is_an_rfc9562_version_7_uuid_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert isinstance(value, uuid.UUID)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_new_ids_sort_in_creation_order_and_do_not_repeat() -> None:
    ordered = []
    for _ in range(20):
        ordered.append(new_id())
        time.sleep(0.002)  # the order is by millisecond; within one it is random
    assert sorted(ordered) == ordered
    assert sorted(ordered, key=str) == ordered  # the text form sorts the same way
    many = {new_id() for _ in range(20_000)}
    assert len(many) == 20_000


@pytest.fixture
def sqlite_table(tmp_path: Path) -> Iterator[tuple[Engine, Table]]:
    engine = create_engine(f"sqlite:///{tmp_path / 'times.db'}")
    table = Table(
        "moments",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", UTCDateTime()),
    )
    table.create(engine)
    yield engine, table
    engine.dispose()


def test_utc_datetime_refuses_naive_datetimes(sqlite_table: tuple[Engine, Table]) -> None:
    engine, table = sqlite_table
    with (
        engine.begin() as conn,
        pytest.raises(StatementError, match="naive datetime given to a timezone-aware column"),
    ):
        conn.execute(insert(table).values(id=1, at=datetime(2024, 5, 1, 12, 0)))


def test_utc_datetime_returns_aware_utc_values_on_sqlite(
    sqlite_table: tuple[Engine, Table],
) -> None:
    engine, table = sqlite_table
    paris_summer = timezone(timedelta(hours=2))
    given = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=paris_summer)
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=1, at=given))
        conn.execute(insert(table).values(id=2, at=None))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT at FROM moments WHERE id = 1")).scalar_one()
        back = conn.execute(select(table.c.at).where(table.c.id == 1)).scalar_one()
        empty = conn.execute(select(table.c.at).where(table.c.id == 2)).scalar_one()
    # Stored as UTC wall time, read back as the same instant, aware, in UTC.
    assert stored == "2024-05-01 10:30:15.123456"
    assert back == given
    assert back.tzinfo == UTC
    assert back == datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC)
    assert empty is None
