"""LangGraph checkpointers: PostgreSQL (thread = session) in compose and cluster modes, a
SQLite file under DATA_DIR in embedded mode. One per worker process, opened lazily.

On PostgreSQL the saver draws from a small psycopg pool that checks each connection before
handing it out: a connection the server dropped (PostgreSQL restarted, a proxy timed it
out) is replaced, not reused for every later turn of the process."""

from __future__ import annotations

import sqlite3
from typing import Any

from api.config import Settings
from api.db import libpq_dsn


def open_checkpointer(settings: Settings) -> tuple[Any, Any]:
    """(saver, connection). PostgreSQL's tables come from Alembic (migration 0002)."""
    if settings.is_embedded_database:
        from langgraph.checkpoint.sqlite import SqliteSaver

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(settings.data_dir / "checkpoints.sqlite", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        saver = SqliteSaver(conn)
        saver.setup()
        return saver, conn
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[Any] = ConnectionPool(
        libpq_dsn(settings.sqlalchemy_url),
        min_size=1,
        max_size=2,  # the turn, and the occasional lookup beside it
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=ConnectionPool.check_connection,
        timeout=30,
        reconnect_timeout=60,
        name="quarry-checkpoints",
        open=True,
    )
    return PostgresSaver(pool), pool


def has_checkpoint(conn: Any, thread_id: str) -> bool:
    """Whether the thread has any checkpoint: one indexed row lookup (the saver's
    `get_tuple` would also load the checkpoint, its blobs and its pending writes)."""
    if isinstance(conn, sqlite3.Connection):
        sql = "SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' LIMIT 1"
        return conn.execute(sql, (thread_id,)).fetchone() is not None
    sql = "SELECT 1 FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' LIMIT 1"
    with conn.connection() as pg:
        return pg.execute(sql, (thread_id,)).fetchone() is not None
