"""What each API process knows about the workers, refreshed every few seconds off the
event loop: live workers per queue (from their heartbeats) and the broker's queue depths.

Requests read the last snapshot and never query for it: a queued run says why it is not
starting (`waiting`), an event stream tells its follower, and `/metrics` exports both as
gauges (`quarry_queue_workers`, `quarry_queue_depth`).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from anyio import to_thread

from api import liveness
from api.db import utcnow
from api.liveness import QueueLiveness
from api.logs import get_logger
from api.metrics import QUEUE_DEPTH, QUEUE_WORKERS
from api.queue import QUEUES, queue_depths

if TYPE_CHECKING:
    from api.deps import AppState

log = get_logger("quarry.monitor")

REFRESH_S = 5.0
NOTICE_AFTER = timedelta(seconds=REFRESH_S + 1)  # no news before the next look
FORGET_AFTER_S = 24 * 3600.0  # rows of workers long gone


class QueueMonitor:
    def __init__(self, state: AppState, every_s: float = REFRESH_S) -> None:
        self._state = state
        self.every_s = every_s
        self.snapshot: QueueLiveness | None = None
        self.depths: dict[str, int | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0

    def refresh(self) -> QueueLiveness:
        """One look (blocking: call it in a thread)."""
        state = self._state
        with state.sessionmaker() as db:
            found = liveness.read(db, state.settings.worker_heartbeat_s)
            if self._rounds % 720 == 0:  # about hourly at the default interval
                liveness.forget(db, older_than_s=FORGET_AFTER_S)
                db.commit()
        self._rounds += 1
        self.depths = queue_depths(state.settings, state.redis)
        for queue in QUEUES:
            QUEUE_WORKERS.labels(queue).set(found.workers.get(queue, 0))
            depth = self.depths.get(queue)
            if depth is not None:
                QUEUE_DEPTH.labels(queue).set(depth)
        self.snapshot = found
        return found

    def waiting(self, queue: str, since: datetime | None = None) -> str | None:
        """What to tell a user whose work waits on `queue` (since `since`), if it has no live
        worker (None while unknown: before the first look, or with the database unreachable;
        and for work younger than NOTICE_AFTER, which a worker that has just started, not yet
        in the last look, may be taking)."""
        found = self.snapshot
        if found is None or found.has_worker(queue):
            return None
        if since is not None and utcnow() - since < NOTICE_AFTER:
            return None
        return liveness.WAITING_NOTICES.get(queue)

    @property
    def checked_at(self) -> datetime | None:
        return self.snapshot.checked_at if self.snapshot else None

    async def _loop(self) -> None:
        while True:
            try:
                await to_thread.run_sync(self.refresh, abandon_on_cancel=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database blinked: keep the last snapshot
                log.warning("queue monitor could not refresh", error=str(exc)[:300])
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
