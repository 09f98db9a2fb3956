"""The agent's LangGraph checkpoints hold a session's conversation (thread id = session id):
deleting the session deletes them too. PostgreSQL keeps them in tables of Quarry's own
database (migration 0002); embedded mode in DATA_DIR/checkpoints.sqlite (worker/agent/
checkpoint.py). The API touches them only here, with plain SQL: it never loads LangGraph."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid

from sqlalchemy import text
from sqlalchemy.orm import Session

from api.config import Settings

POSTGRES_TABLES = ("checkpoint_writes", "checkpoint_blobs", "checkpoints")
SQLITE_TABLES = ("writes", "checkpoints")
SQLITE_FILE = "checkpoints.sqlite"


def forget_thread(db: Session, settings: Settings, session_id: uuid.UUID) -> None:
    """In PostgreSQL, inside the caller's transaction (both go, or neither); the SQLite
    file is separate, so call this after the commit there."""
    thread = str(session_id)
    if not settings.is_embedded_database:
        for table in POSTGRES_TABLES:
            db.execute(text(f"DELETE FROM {table} WHERE thread_id = :t"), {"t": thread})  # noqa: S608
        return
    path = settings.data_dir / SQLITE_FILE
    if not path.exists():
        return
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn, conn:
        for table in SQLITE_TABLES:
            with contextlib.suppress(sqlite3.OperationalError):  # not created yet
                conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread,))  # noqa: S608
