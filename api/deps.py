"""Request dependencies as `Annotated` aliases: `SessionDep`, `CurrentUser`, `StateDep`..."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import redis
import structlog
from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import bindparam, exists, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm import sessionmaker as SessionMaker  # noqa: N812 (a field is named sessionmaker)

from api.config import Settings
from api.errors import Unauthorized
from api.models import RevokedAccessToken, User
from api.prepared import Prepared
from api.ratelimit import Counter
from api.security import Passwords, TokenClaims, TokenError, decode_token

if TYPE_CHECKING:
    from api.monitor import QueueMonitor
    from api.notify import RunNotifier
    from api.queue import TaskQueue


class ReadGate:
    """Admission to the read pool for code on the event loop.

    The event loop must never wait for a pooled connection: a blocking checkout there stops
    every request of the process, and the connections it waits for can only come back
    through that same loop (a deadlock that the pool's 30 s timeout ends). So whatever
    takes a read connection first takes a slot here, with one slot per connection the pool
    can hand out: a checkout that holds a slot always finds a connection at once, and
    waiting, when there is any, happens here, asynchronously. (Per event loop: the tests
    run several.)"""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            self._gates = {k: v for k, v in self._gates.items() if not k.is_closed()}
            gate = self._gates[loop] = asyncio.Semaphore(self.capacity)
        return gate

    async def __aenter__(self) -> None:
        await self._gate().acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self._gate().release()

    @property
    def in_use(self) -> int:
        gate = self._gates.get(asyncio.get_running_loop())
        return 0 if gate is None else self.capacity - gate._value


def pool_capacity(engine: Engine) -> int:
    """How many connections the engine's pool hands out at once."""
    pool: Any = engine.pool
    size = pool.size() if hasattr(pool, "size") else 5
    overflow = getattr(pool, "_max_overflow", 0)
    return int(size) + (int(overflow) if overflow >= 0 else 1000)


@dataclass
class AppState:
    """What one API process holds: built by `create_app`, closed by its lifespan."""

    settings: Settings
    engine: Engine
    read_engine: Engine
    sessionmaker: SessionMaker[Session]
    read_sessionmaker: SessionMaker[Session]
    passwords: Passwords
    counter: Counter
    redis: redis.Redis | None
    queue: TaskQueue
    notifier: RunNotifier
    read_gate: ReadGate
    monitor: QueueMonitor = field(init=False, repr=False)


def get_state(request: Request) -> AppState:
    return request.app.state.quarry  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


_READ_METHODS = frozenset({"GET", "HEAD"})

# Reads on the event loop. GET endpoints that only read the database are `async def` and
# query on the event loop, not in the thread pool: their queries are indexed lookups
# (prepared statements on PostgreSQL, well under a millisecond) on the autocommit read
# engine, whose statement_timeout (DB_READ_TIMEOUT_MS) bounds how long one can hold the
# loop. The thread pool costs more than those queries: two hand-offs per request (the
# endpoint, then FastAPI's response validation for sync endpoints) made half the CPU time
# kernel time under 32 concurrent clients (futex and GIL hand-offs) and put p95 at 170 ms;
# on the loop it was 24 ms. Anything slow or unbounded (files, writes, password hashing)
# stays in threads.


async def read_session(state: AppState) -> Session:
    """An autocommit session holding its connection already; call with a `read_gate` slot.
    A connection that must be opened first (none idle) is opened in a thread: connecting
    can take up to the connect timeout when the database does not answer."""
    session = state.read_sessionmaker()
    try:
        idle = getattr(state.read_engine.pool, "checkedin", lambda: 0)()
        if idle > 0:
            session.connection()
        else:
            await run_in_threadpool(session.connection)
    except BaseException:
        session.close()
        raise
    return session


async def get_db(request: Request) -> AsyncIterator[Session]:
    """A database session for the request. GET/HEAD requests only read: they get an
    autocommit session, whose close needs no round trip and so runs on the event loop;
    other requests get a transaction, closed (rolled back if not committed) in a thread."""
    state = get_state(request)
    if request.method in _READ_METHODS:
        async with state.read_gate:  # see ReadGate
            session = await read_session(state)
            try:
                yield session
            finally:
                session.close()
        return
    session = state.sessionmaker()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_db)]

bearer_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/login", auto_error=False)


@dataclass(frozen=True, slots=True)
class Principal:
    """The signed-in user as a request sees it: plain values, not an ORM row (routes that
    change the user load the row themselves)."""

    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    created_at: datetime
    token_version: int


# Runs on every authenticated request: built and (on PostgreSQL) prepared once.
_PRINCIPAL = Prepared(
    "principal",
    select(
        User.id, User.email, User.full_name, User.is_active, User.created_at, User.token_version
    ).where(
        User.id == bindparam("user_id"),
        User.is_active.is_(True),
        User.token_version == bindparam("version"),
        ~exists().where(RevokedAccessToken.jti == bindparam("jti")),
    ),
    "user_id",
    "version",
    "jti",
)


def load_principal(db: Session, claims: TokenClaims) -> Principal | None:
    """One round trip: the user, still active, still on the same token version, and this
    access token not signed out."""
    rows = _PRINCIPAL.run(db.connection(), claims.sub, claims.version, claims.jti)
    return Principal(*rows[0]) if rows else None


async def get_access_claims(
    request: Request, token: Annotated[str | None, Depends(bearer_scheme)]
) -> TokenClaims:
    if not token:
        raise Unauthorized("Not authenticated: send 'Authorization: Bearer <access token>'")
    try:
        return decode_token(get_state(request).settings, token, "access")
    except TokenError:
        raise Unauthorized("Invalid or expired access token") from None


AccessClaims = Annotated[TokenClaims, Depends(get_access_claims)]


async def get_current_user(request: Request, db: SessionDep, claims: AccessClaims) -> Principal:
    return await authenticate(request, db, claims)


async def authenticate(request: Request, db: Session, claims: TokenClaims) -> Principal:
    """The user the access token names, still active and not signed out; 401 otherwise."""
    if request.method in _READ_METHODS:
        user = load_principal(db, claims)  # see "Reads on the event loop" above
    else:
        user = await run_in_threadpool(load_principal, db, claims)
    if user is None:
        raise Unauthorized("Invalid or expired access token")
    # Bound in the request's own context, so the endpoint's log lines and the access log
    # carry the user id.
    request.state.user_id = user.id
    structlog.contextvars.bind_contextvars(user_id=str(user.id))
    return user


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def client_ip(request: Request) -> str:
    # uvicorn rewrites the client from X-Forwarded-For when the proxy is trusted
    # (--forwarded-allow-ips), so this is the real address behind an ingress.
    return request.client.host if request.client else "unknown"


def user_agent(request: Request) -> str | None:
    agent = request.headers.get("user-agent")
    return agent[:255] if agent else None


@dataclass(frozen=True)
class PageParams:
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]
