"""The worker says it is alive: its main process upserts a `worker_heartbeats` row every
WORKER_HEARTBEAT_S from the moment its consumer is ready, and deletes the row when it stops
cleanly (api/liveness.py reads them).

It runs in the main process, not in the prefork children, so it speaks for the process that
consumes the queues. Each beat opens its own short connection (NullPool): a pooled
connection held across a fork would be shared with the children that the pool starts later.
A beat that fails (the database restarting) is logged and tried again at the next tick.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from api import liveness
from api.config import Settings
from api.db import utcnow
from api.logs import get_logger
from worker.ticker import Ticker

log = get_logger("quarry.worker.heartbeat")


class WorkerHeartbeat(Ticker):
    name = "quarry-worker-heartbeat"

    def __init__(
        self, settings: Settings, *, hostname: str, queues: list[str], concurrency: int, beat: bool
    ) -> None:
        super().__init__(settings.worker_heartbeat_s)
        pid = os.getpid()
        self.worker_id = f"{hostname}:{pid}"[:255]
        now = utcnow()
        self.values: dict[str, Any] = {
            "name": self.worker_id,
            "hostname": (hostname or socket.gethostname())[:255],
            "pid": pid,
            "queues": ",".join(sorted(queues))[:255],
            "concurrency": concurrency,
            "beat": beat,
            "started_at": now,
            "seen_at": now,
        }
        connect_args = {} if settings.is_embedded_database else {"connect_timeout": 5}
        self._engine = create_engine(
            settings.sqlalchemy_url, poolclass=NullPool, connect_args=connect_args
        )
        self.failures = 0

    def tick(self) -> None:
        try:
            with Session(self._engine) as db:
                liveness.beat(db, {**self.values, "seen_at": utcnow()})
                db.commit()
            if self.failures:
                log.info("worker heartbeat written again", after_failures=self.failures)
            self.failures = 0
        except Exception as exc:  # the database blinked: the next tick tries again
            self.failures += 1
            log.warning("worker heartbeat failed", error=str(exc)[:300], failures=self.failures)

    def __enter__(self) -> WorkerHeartbeat:
        self.tick()  # alive from the first moment, not one interval later
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        try:
            with Session(self._engine) as db:
                liveness.forget(db, self.worker_id)
                db.commit()
        except Exception as exc:
            log.warning("could not remove the worker heartbeat", error=str(exc)[:300])
        self._engine.dispose()


_current: WorkerHeartbeat | None = None


def start(settings: Settings, consumer: Any) -> None:
    """On `worker_ready` (in the main process; `consumer` is Celery's Consumer)."""
    global _current
    if _current is not None:
        return
    controller = getattr(consumer, "controller", None)
    queues = sorted(consumer.app.amqp.queues.consume_from or {})
    _current = WorkerHeartbeat(
        settings,
        hostname=str(getattr(consumer, "hostname", "") or socket.gethostname()),
        queues=queues,
        concurrency=int(getattr(controller, "concurrency", 1) or 1),
        beat=getattr(controller, "beat", None) is not None,
    )
    _current.__enter__()
    log.info("worker heartbeat started", worker=_current.worker_id, queues=queues)


def stop() -> None:
    """On `worker_shutdown`: the row goes, so the API knows at once."""
    global _current
    if _current is not None:
        _current.__exit__(None, None, None)
        _current = None
