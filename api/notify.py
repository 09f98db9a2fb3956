"""Waking run-event streams the moment a worker appends events, on any API replica.

Whoever appends run events also sends `NOTIFY quarry_run_events, '<run id>'` in the same
transaction (PostgreSQL delivers it at commit, never for a rolled-back write). Each API
process keeps one connection LISTENing on that channel and wakes the streams of that run.
The database stays the only source of the events themselves: a stream that wakes reads
them from there, and without notifications (SQLite, or the listening connection down) the
streams fall back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

from api.db import libpq_dsn
from api.logs import get_logger

log = get_logger("quarry.notify")

CHANNEL = "quarry_run_events"
RECONNECT_S = (0.5, 1.0, 2.0, 5.0, 10.0)


def notify_run(db: Session, run_id: uuid.UUID) -> None:
    """Part of the caller's transaction: delivered when it commits."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_notify(:c, :run)"), {"c": CHANNEL, "run": run_id.hex})


class RunNotifier:
    """One LISTEN connection per API process, shared by every open event stream."""

    def __init__(self, database_url: str, *, listen: bool = True) -> None:
        url = make_url(database_url)
        self.enabled = listen and url.get_backend_name() == "postgresql"
        self._conninfo = libpq_dsn(database_url)
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.listening = False

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever the run gets new events. Subscribe *before* reading, then
        clear-read-wait: a notification between the read and the wait is not lost."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())
        waiter = asyncio.Event()
        key = run_id.hex
        self._waiters.setdefault(key, set()).add(waiter)
        try:
            yield waiter
        finally:
            found = self._waiters.get(key)
            if found is not None:
                found.discard(waiter)
                if not found:
                    del self._waiters[key]

    def _wake(self, key: str) -> None:
        for waiter in self._waiters.get(key, ()):
            waiter.set()

    async def _listen(self) -> None:
        import psycopg

        failures = 0
        while True:
            try:
                conn: Any = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=5
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening, failures = True, 0
                    # (a stream that missed notifications while disconnected polls anyway)
                    for key in list(self._waiters):
                        self._wake(key)
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("run-event listener disconnected", error=str(exc))
            self.listening = False
            await asyncio.sleep(RECONNECT_S[min(failures, len(RECONNECT_S) - 1)])
            failures += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.listening = False
