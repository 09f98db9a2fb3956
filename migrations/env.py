"""Alembic environment: Quarry's settings give the URL, Quarry's models give the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import context
from sqlalchemy import create_engine, make_url, pool

from api import models  # noqa: F401  (registers the tables on Base.metadata)
from api.config import get_settings
from api.db import Base, UTCDateTime, include_object

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    # A caller (tests, the pre-start script) may hand over a URL explicitly.
    return config.attributes.get("url") or get_settings().sqlalchemy_url


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations spell the portable column type, not Quarry's decorator around it.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    url = kwargs.pop("url", None) or _url()
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=url.startswith("sqlite"),  # SQLite cannot ALTER most things
        render_item=_render_item,
        include_object=include_object,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection, url=str(connection.engine.url))
        with context.begin_transaction():
            context.run_migrations()
        return
    url = make_url(_url())
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(connection=conn, url=str(engine.url))
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
