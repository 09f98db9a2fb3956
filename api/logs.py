"""Structured logs for the API and the worker: JSON lines in production, readable on a TTY.

Every stdlib logger (uvicorn, SQLAlchemy, Alembic, Celery) is routed through the same
structlog pipeline, so one log line has one shape whoever wrote it. Values bound with
`structlog.contextvars` (request_id, user_id, run_id) appear on every line of that context.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer

# Keys whose values never reach a log line, whoever logs them.
_SECRET_SUFFIXES = ("password", "secret", "_token", "api_key", "apikey", "authorization", "cookie")
_FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "alembic", "celery")


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        lowered = key.lower()
        if (lowered == "token" or lowered.endswith(_SECRET_SUFFIXES)) and event[key] is not None:
            event[key] = "[redacted]"
    return event


def _json_dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(level: str = "INFO", json_logs: bool | None = None) -> None:
    """Idempotent: the API and the worker call it at start-up, tests call it again freely."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: structlog.types.Processor
    if json_logs:
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        # Tracebacks without frame locals: those hold passwords, tokens and connection
        # strings (structlog shows them by default).
        exc: list[structlog.types.Processor] = [
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer()
        exc = []

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    # Quarry logs each request itself (with the request id and user); uvicorn's access log
    # would be a second, poorer line. SQLAlchemy's INFO is every statement: opt-in only.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.captureWarnings(True)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
