"""Server-side prepared statements for the hottest reads on PostgreSQL.

psycopg2 sends every query as text, and PostgreSQL plans it afresh: for the two queries
behind `GET /api/sessions/{id}` planning took 0.26 ms each against 0.05-0.10 ms of
execution, so most of the database's CPU went to planning the same statements again and
again. A `Prepared` statement is compiled once from a SQLAlchemy Core select, `PREPARE`d on
every new connection of the read engine, then run with `EXECUTE`. On SQLite (and with
`DB_PREPARED_STATEMENTS=false`, e.g. behind PgBouncer in transaction mode) the same Core
statement runs the ordinary way.

Not for writes and not for anything that needs the ORM: these are read models.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import NullType, TypeEngine

AnySelect = Select[*tuple[Any, ...]]
_REGISTRY: list[Prepared] = []
_PG = postgresql.psycopg2.dialect()  # type: ignore[no-untyped-call]
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class Prepared:
    """`Prepared("name", select(...), "param1", "param2")`; parameters are bindparams of
    the statement, passed positionally to `run` in that order. `generic` is the statement
    for other databases when the PostgreSQL one uses PostgreSQL-only syntax."""

    def __init__(
        self,
        name: str,
        statement: AnySelect,
        *params: str,
        generic: AnySelect | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad prepared statement name {name!r}")
        self.name = f"quarry_{name}"
        self.statement = statement
        self.generic = generic if generic is not None else statement
        self.params = params
        compiled = statement.compile(dialect=_PG)
        sql = str(compiled)
        for position, param in enumerate(params, start=1):
            sql, found = re.subn(rf"%\({re.escape(param)}\)s", f"${position}", sql)
            if not found:
                raise ValueError(f"{name}: no bind parameter {param!r} in the statement")
        if "%(" in sql:
            raise ValueError(f"{name}: every bind parameter must be listed: {sql}")
        self.prepare_sql = f"PREPARE {self.name} AS {sql}"
        # psycopg2 sends Python lists as text[]; cast each argument to its declared type.
        placeholders = ", ".join(_placeholder(compiled.binds[p].type) for p in params)
        self.execute_sql = f"EXECUTE {self.name}({placeholders})"
        _REGISTRY.append(self)

    def run(self, conn: Connection, *values: Any) -> Sequence[Sequence[Any]]:
        """Rows as tuples of Python values: UUIDs as UUID, timestamps aware (in UTC on the
        prepared path: `install` sets the session's time zone), enums as values or members
        (schemas accept both)."""
        if conn.dialect.name == "postgresql" and conn.info.get("quarry_prepared"):
            return _execute(conn, self.execute_sql, tuple(_bind(v) for v in values))
        params = dict(zip(self.params, values, strict=True))
        return list(conn.execute(self.generic, params))


def _execute(conn: Connection, sql: str, args: tuple[Any, ...]) -> list[Any]:
    """Straight on the DBAPI cursor: SQLAlchemy's result machinery cost more CPU than these
    queries take. When the link to the server is gone, do what SQLAlchemy does on a
    disconnect: drop this connection and the pool's other ones (a restarted server killed
    them all), so that the next request connects afresh instead of failing again."""
    import psycopg2

    try:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        if getattr(exc, "pgcode", None) is None:  # no server error code: the link is gone
            conn.invalidate(exc)
            conn.engine.dispose(close=False)
        raise


def _placeholder(kind: TypeEngine[Any]) -> str:
    return "%s" if isinstance(kind, NullType) else f"%s::{kind.compile(dialect=_PG)}"


def _bind(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_bind(v) for v in value]
    return value


def install(engine: Engine) -> None:
    """PREPARE every registered statement on each new connection of `engine`."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _prepare(dbapi_connection: Any, record: Any) -> None:
        from psycopg2.extras import register_uuid

        # Rows are used as the driver returns them: make that UUIDs and UTC timestamps.
        register_uuid(None, dbapi_connection)  # type: ignore[no-untyped-call]
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET TIME ZONE 'UTC'")
            for prepared in _REGISTRY:
                cursor.execute(prepared.prepare_sql)
        finally:
            cursor.close()
        if not dbapi_connection.autocommit:
            dbapi_connection.commit()
        record.info["quarry_prepared"] = True
