"""Engine, session factory and the column types every model shares."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, MetaData, create_engine, event, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from api.config import Settings

# Named constraints let Alembic alter them later, and SQLite's batch mode needs names.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# LangGraph's checkpoint tables: created by migration 0002 from the library's own
# statements, not described by Quarry's models (autogenerate leaves them alone).
EXTERNAL_TABLES = frozenset(
    {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"}
)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
    """Alembic's filter: Quarry's own tables and their indexes only."""
    if type_ == "table" and name in EXTERNAL_TABLES:
        return False
    table = getattr(obj, "table", None)
    return not (table is not None and table.name in EXTERNAL_TABLES)


def libpq_dsn(sqlalchemy_url: str) -> str:
    """`postgresql+psycopg2://u:p@h/db?x=y` -> `postgresql://u:p@h/db?x=y`: the URL as libpq
    (psycopg 3: the LISTEN connection, the LangGraph checkpointer) takes it."""
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): random like v4 but time-ordered, so new rows land at the end of
    primary-key indexes and ids sort in creation order."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps everywhere. PostgreSQL keeps `timestamptz`; SQLite has no
    time zones, so values are stored as UTC and come back aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def make_engine(
    settings: Settings, *, autocommit: bool = False, pre_ping: bool | None = None
) -> Engine:
    """The engine; `autocommit=True` gives a second engine (its own pool) whose connections
    never open a transaction: for requests that only read, it saves the BEGIN and ROLLBACK
    round trips around their queries. `pre_ping` overrides DB_POOL_PRE_PING (workers ping:
    a turn's few checkouts can afford it, and a stale connection there fails a user's turn
    after its message was taken)."""
    url = settings.sqlalchemy_url
    extra: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
            **extra,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options = {"application_name": "quarry", "connect_timeout": 10}
    if autocommit:
        options["options"] = f"-c statement_timeout={settings.db_read_timeout_ms}"
    return create_engine(
        url,
        # Parameters (emails, hashes, message text) never reach exception messages and logs.
        hide_parameters=True,
        **extra,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A ping costs a round trip per checkout; disconnects are detected on use instead
        # (the pool is invalidated and the next checkout reconnects). DB_POOL_PRE_PING=true
        # trades that round trip for never failing one request after a database restart.
        pool_pre_ping=settings.db_pool_pre_ping if pre_ping is None else pre_ping,
        pool_recycle=1800,
        connect_args=options,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets the API read while a worker writes.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


__all__ = [
    "Base",
    "JSONType",
    "UTCDateTime",
    "make_engine",
    "make_sessionmaker",
    "new_id",
    "utcnow",
]
