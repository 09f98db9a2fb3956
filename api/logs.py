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


def _name(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if "logger_name" in event:
        event["logger"] = event.pop("logger_name")
    return event


def _json_str(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _json_bytes(obj: Any, **_kw: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def configure_logging(level: str = "INFO", json_logs: bool | None = None) -> None:
    """Idempotent: the API and the worker call it at start-up, tests call it again freely.

    Quarry's own loggers use structlog's native pipeline (a log line costs a few
    microseconds: it runs once per request); stdlib loggers are rendered by the same
    processors through a logging handler, so every line has the same shape."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    numeric_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)

    shared: list[structlog.types.Processor] = [
        _name,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    # Tracebacks without frame locals: those hold passwords, tokens and connection strings
    # (structlog shows them by default).
    exc: list[structlog.types.Processor] = (
        [structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))]
        if json_logs
        else []
    )
    stream = sys.stderr
    if json_logs and hasattr(stream, "buffer"):
        renderer: structlog.types.Processor = structlog.processors.JSONRenderer(
            serializer=_json_bytes
        )
        factory: Any = structlog.BytesLoggerFactory(stream.buffer)
    elif json_logs:
        renderer = structlog.processors.JSONRenderer(serializer=_json_str)
        factory = structlog.PrintLoggerFactory(stream)
    else:
        renderer = structlog.dev.ConsoleRenderer()
        factory = structlog.PrintLoggerFactory(stream)

    structlog.configure(
        processors=[*shared, *exc, renderer],
        logger_factory=factory,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # Not cached: tests and tools reconfigure (level, format) after loggers exist.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc,
            structlog.processors.JSONRenderer(serializer=_json_str) if json_logs else renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)

    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    # Quarry logs each request itself (with the request id and user); uvicorn's access log
    # would be a second, poorer line. SQLAlchemy's INFO is every statement: opt-in only.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    for client in ("httpx", "httpx2"):
        logging.getLogger(client).setLevel(logging.WARNING)
    logging.captureWarnings(True)


def get_logger(name: str) -> Any:
    """A structlog logger whose lines carry `logger=<name>`."""
    # Lazily configured: resolving (e.g. with .bind) at import time would pin the logger to
    # whatever configuration existed then. `logger` itself cannot be an initial value.
    return structlog.get_logger(logger_name=name)
