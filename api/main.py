"""The Quarry API: `uvicorn api.main:app`."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.middleware import Middleware

from api import __version__, prepared
from api.config import Settings, get_settings
from api.db import make_engine, make_sessionmaker
from api.deps import AppState, ReadGate, pool_capacity
from api.errors import install_error_handlers
from api.logs import configure_logging, get_logger
from api.middleware import BodyLimitMiddleware, CORSMiddleware, RequestContextMiddleware
from api.monitor import QueueMonitor
from api.notify import RunNotifier
from api.queue import TaskQueue
from api.ratelimit import Counter, MemoryCounter, RedisCounter
from api.routes import ROUTERS
from api.security import Passwords

log = get_logger("quarry.api")

DESCRIPTION = """
Upload datasets, ask questions about them in plain language, and keep every answer and
chart. Sign in with `POST /api/auth/login` (or the **Authorize** button), then send
`Authorization: Bearer <access_token>`. Errors always have the shape
`{"error": {"code", "message", "request_id"}}`; lists are pages `{data, count, limit, offset}`.
"""

TAGS = [
    {"name": "auth", "description": "Accounts and tokens (JWT access + rotating refresh)."},
    {"name": "datasets", "description": "Upload, inspect, preview, download, delete."},
    {"name": "sessions", "description": "Analysis sessions, their messages and charts."},
    {"name": "runs", "description": "Agent turns."},
    {"name": "visualizations", "description": "Stored Plotly charts."},
    {"name": "health", "description": "Probes and metrics."},
]


def build_state(settings: Settings) -> AppState:
    engine = make_engine(settings)
    read_engine = make_engine(settings, autocommit=True)
    if read_engine.dialect.name == "postgresql" and settings.db_prepared_statements:
        prepared.install(read_engine)
    factory = make_sessionmaker(engine)
    client = (
        redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        if settings.redis_url
        else None
    )
    fallback = MemoryCounter()
    counter: Counter = (
        RedisCounter(client, settings.redis_prefix, fallback) if client is not None else fallback
    )
    state = AppState(
        settings=settings,
        engine=engine,
        sessionmaker=factory,
        read_engine=read_engine,
        read_sessionmaker=make_sessionmaker(read_engine),
        passwords=Passwords(settings),
        counter=counter,
        redis=client,
        queue=TaskQueue(settings),
        notifier=RunNotifier(settings.sqlalchemy_url, listen=settings.run_events_listen),
        read_gate=ReadGate(pool_capacity(read_engine)),
    )
    state.monitor = QueueMonitor(state)
    return state


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    state = build_state(settings)
    if settings.is_embedded_database:
        log.info("embedded mode: SQLite database", path=settings.sqlalchemy_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built at start-up lives as long as the process: keep it out of the
        # collector's way, so that full collections (tens of ms with every module, model
        # and schema tracked) stop landing in the middle of requests.
        gc.collect()
        gc.freeze()
        state.monitor.start()
        yield
        await state.monitor.stop()
        await state.notifier.close()
        await run_in_threadpool(state.queue.close)
        state.engine.dispose()
        state.read_engine.dispose()
        if state.redis is not None:
            state.redis.close()

    upload_cap = settings.max_upload_bytes + (1 << 20)  # room for multipart framing
    app = FastAPI(
        title="Quarry",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        debug=settings.debug,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestContextMiddleware, hsts=settings.quarry_env == "production"),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
                expose_headers=["X-Request-ID", "Retry-After", "Content-Disposition"],
                max_age=600,
            ),
            Middleware(
                BodyLimitMiddleware,
                default=settings.max_request_body_bytes,
                overrides={("POST", "/api/datasets"): upload_cap},
            ),
        ],
    )
    app.state.quarry = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn api.main:app` builds the app from the environment on first access; importing
    # this module for `create_app` (tests, tools) builds nothing.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)
