"""LangGraph checkpointers: PostgreSQL (thread = session) in compose and cluster modes, a
SQLite file under DATA_DIR in embedded mode. One per worker process, opened lazily."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import make_url

from api.config import Settings


def psycopg_dsn(sqlalchemy_url: str) -> str:
    """`postgresql+psycopg2://u:p@h/db?x=y` -> `postgresql://u:p@h/db?x=y` (libpq form)."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


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
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    pg = psycopg.connect(
        psycopg_dsn(settings.sqlalchemy_url),
        autocommit=True,
        prepare_threshold=0,
        row_factory=dict_row,
    )
    return PostgresSaver(pg), pg


def has_checkpoint(conn: Any, thread_id: str) -> bool:
    """Whether the thread has any checkpoint: one indexed row lookup (the saver's
    `get_tuple` would also load the checkpoint, its blobs and its pending writes)."""
    if isinstance(conn, sqlite3.Connection):
        sql = "SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' LIMIT 1"
        return conn.execute(sql, (thread_id,)).fetchone() is not None
    sql = "SELECT 1 FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' LIMIT 1"
    return conn.execute(sql, (thread_id,)).fetchone() is not None
