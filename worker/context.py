"""The per-process context of a worker (a Celery prefork child): database engine, sandbox
backend, checkpointer and compiled graph, all opened lazily after the fork; one per
process (`get_context`), dropped after a fork (`reset_context`) and closed at exit.
"""

from __future__ import annotations

import threading
from typing import Any

from api.config import Settings, get_settings
from api.db import make_engine, make_sessionmaker
from worker.agent import graph as agent_graph
from worker.agent.llm import make_model
from worker.sandbox import Backend, get_backend


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings, pre_ping=True)
        self.factory = make_sessionmaker(self.engine)
        self._broker_client: Any = None
        self._lock = threading.Lock()
        self._backend: Backend | None = None
        self._saver: Any = None
        self._saver_conn: Any = None
        self._graph: Any = None
        self._model: Any = None

    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                self._backend = get_backend(self.settings)
            return self._backend

    def terminate_sandbox(self) -> None:
        backend = self._backend
        if backend is not None:
            backend.terminate()

    def graph(self) -> Any:
        with self._lock:
            if self._graph is None:
                from worker.agent.checkpoint import open_checkpointer

                self._saver, self._saver_conn = open_checkpointer(self.settings)
                # twice what the model is sent: room for a window that starts a bit earlier
                keep = 2 * self.settings.agent_history_messages
                self._graph = agent_graph.build(self._saver, keep_messages=keep)
            return self._graph

    def has_checkpoint(self, config: dict[str, Any]) -> bool:
        from worker.agent.checkpoint import has_checkpoint

        self.graph()  # opens the checkpointer
        with self._lock:  # one connection per process; the run's Watch thread uses others
            return has_checkpoint(self._saver_conn, config["configurable"]["thread_id"])

    def broker_client(self) -> Any:
        """A Redis client for reading queue depths (None in embedded mode)."""
        if self._broker_client is None and self.settings.redis_url:
            import redis

            self._broker_client = redis.Redis.from_url(
                self.settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        return self._broker_client

    def model(self) -> Any:
        if self._model is None:
            self._model = make_model(self.settings)
        return self._model

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._saver_conn is not None:
            self._saver_conn.close()
            self._saver_conn = self._saver = self._graph = None
        if self._broker_client is not None:
            self._broker_client.close()
            self._broker_client = None
        self.engine.dispose()


_context: WorkerContext | None = None


def get_context() -> WorkerContext:
    global _context
    if _context is None:
        _context = WorkerContext(get_settings())
    return _context


def reset_context() -> None:
    """After a fork: nothing of the parent's connections or sandboxes is reused."""
    global _context
    if _context is not None:
        _context.engine.dispose(close=False)
    _context = None


def close_context() -> None:
    global _context
    if _context is not None:
        _context.close()
        _context = None
