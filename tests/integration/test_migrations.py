"""Alembic owns the schema: upgrade and downgrade work on PostgreSQL and SQLite, and the
migrations produce exactly what the models describe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from api.db import Base, include_object
from api.prestart import alembic_config
from tests.conftest import create_database, drop_database


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    url = create_database("quarry_migrations")
    yield url
    drop_database(url)


def _engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_object}
        )
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_downgrade_upgrade(empty_database: str) -> None:
    config = alembic_config(empty_database)
    engine = _engine(empty_database)
    command.upgrade(config, "head")
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_langgraph_checkpoint_tables_are_at_the_library_version(pg_engine: Engine) -> None:
    """Migration 0002 created LangGraph's checkpoint tables with every statement the
    installed library knows; a LangGraph upgrade that adds one needs a new revision."""
    from langgraph.checkpoint.postgres.base import BasePostgresSaver

    with pg_engine.connect() as conn:
        newest = conn.execute(text("SELECT max(v) FROM checkpoint_migrations")).scalar()
    assert newest == len(BasePostgresSaver.MIGRATIONS) - 1


def test_models_and_migrations_agree(empty_database: str) -> None:
    """What `alembic revision --autogenerate` would find: nothing."""
    command.upgrade(alembic_config(empty_database), "head")
    engine = _engine(empty_database)
    assert _diff(engine) == []
    engine.dispose()


def test_every_foreign_key_and_user_id_is_indexed(pg_engine: Engine) -> None:
    inspector = inspect(pg_engine)
    missing = []
    for table in Base.metadata.tables:
        leading = {tuple(ix["column_names"][:1]) for ix in inspector.get_indexes(table)}
        leading |= {tuple(uq["column_names"][:1]) for uq in inspector.get_unique_constraints(table)}
        leading.add(tuple(inspector.get_pk_constraint(table)["constrained_columns"][:1]))
        columns = {c["name"] for c in inspector.get_columns(table)}
        wanted = {tuple(fk["constrained_columns"][:1]) for fk in inspector.get_foreign_keys(table)}
        if "user_id" in columns:
            wanted.add(("user_id",))
        missing += [f"{table}.{col[0]}" for col in wanted - leading]
    assert missing == []


def test_keys_are_uuids_and_timestamps_carry_a_time_zone(pg_engine: Engine) -> None:
    inspector = inspect(pg_engine)
    for table in Base.metadata.tables:
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        for pk in inspector.get_pk_constraint(table)["constrained_columns"]:
            assert str(columns[pk]["type"]) == "UUID", f"{table}.{pk}"
        for name, column in columns.items():
            if "TIMESTAMP" in str(column["type"]):
                assert column["type"].timezone, f"{table}.{name} is not timestamptz"
