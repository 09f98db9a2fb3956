"""Read models for the hottest GET endpoints: prebuilt Core statements, rows straight into
response schemas.

The ORM stays the way rows are written. Reading a session through it (identity map,
relationship loading, per-call statement construction) cost several times more CPU than
the query itself; these statements are built once and executed with parameters, and both
the GET endpoints and the write endpoints' responses go through them, so a session is
represented one way only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import ColumnElement, Integer, String, bindparam, cast, func, select
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.models import AnalysisSession, Dataset, SessionDataset
from api.prepared import Prepared
from api.schemas import Page, SessionPublic


def _text(column: ColumnElement[Any]) -> ColumnElement[str]:
    return cast(column, String).label(column.key)


_s = AnalysisSession.__table__.c
_l = SessionDataset.__table__.c
_d = Dataset.__table__.c
# Ids are read as text: the response schemas turn them into UUIDs in pydantic's Rust core,
# far cheaper than building Python UUID objects in the driver only to print them again.
_SESSION = (_text(_s.id), _s.title, _s.status, _s.created_at, _s.updated_at)
_LINK = (
    _text(_l.dataset_id),
    _l.dataset_name,
    _l.added_at,
    _l.dataset_deleted_at,
    _d.name,
    _d.status,
    _d.row_count,
    _d.column_count,
)
_LINKED = AnalysisSession.__table__.outerjoin(
    SessionDataset.__table__, _l.session_id == _s.id
).outerjoin(Dataset.__table__, _d.id == _l.dataset_id)

# One round trip for one session with its datasets.
_ONE = Prepared(
    "session_one",
    select(*_SESSION, *_LINK)
    .select_from(_LINKED)
    .where(_s.id == bindparam("session_id"), _s.user_id == bindparam("user_id"))
    .order_by(_l.added_at, _l.id),
    "session_id",
    "user_id",
)
# A page of sessions with their datasets and the total count, in one round trip: the page
# is cut first (with count(*) over the whole set), then joined to its datasets.
_page = (
    select(_s.id.label("key"), *_SESSION, func.count().over().label("total"))
    .where(_s.user_id == bindparam("user_id"))
    .order_by(_s.updated_at.desc(), _s.id.desc())
    .limit(bindparam("limit", type_=Integer))
    .offset(bindparam("offset", type_=Integer))
    .subquery("page")
)
_p = _page.c
_PAGE = Prepared(
    "session_page",
    select(_p.id, _p.title, _p.status, _p.created_at, _p.updated_at, _p.total, *_LINK)
    .select_from(
        _page.outerjoin(SessionDataset.__table__, _l.session_id == _p.key).outerjoin(
            Dataset.__table__, _d.id == _l.dataset_id
        )
    )
    .order_by(_p.updated_at.desc(), _p.key.desc(), _l.added_at, _l.id),
    "user_id",
    "limit",
    "offset",
)
_COUNT = Prepared(
    "session_count",
    select(func.count())
    .select_from(AnalysisSession.__table__)
    .where(_s.user_id == bindparam("user_id")),
    "user_id",
)


# Rows become plain dicts and each answer is validated once, as a whole, by pydantic's core:
# for a page of 50 sessions that costs a fraction of building 100 models one by one.
_ONE_SESSION = TypeAdapter(SessionPublic)
_SESSION_PAGE = TypeAdapter(Page[SessionPublic])


def _dataset(row: Sequence[Any]) -> dict[str, Any]:
    dataset_id, link_name, added_at, deleted_at, name, status, rows, columns = row
    present = name is not None
    return {
        "id": dataset_id,
        "name": name if present else link_name,
        "status": status if present else "deleted",
        "row_count": rows,
        "column_count": columns,
        "added_at": added_at,
        "deleted_at": deleted_at,
    }


def _session(head: Sequence[Any], links: Iterable[Sequence[Any]]) -> dict[str, Any]:
    session_id, title, status, created_at, updated_at = head
    return {
        "id": session_id,
        "title": title,
        "status": status,
        "created_at": created_at,
        "updated_at": updated_at,
        "datasets": [_dataset(link) for link in links if link[2] is not None],
    }


def session_public(db: Session, session_id: uuid.UUID, user_id: uuid.UUID) -> SessionPublic:
    rows = _ONE.run(db.connection(), session_id, user_id)
    if not rows:
        raise NotFound("Session")
    return _ONE_SESSION.validate_python(_session(rows[0][:5], (row[5:] for row in rows)))


def session_page(db: Session, user_id: uuid.UUID, limit: int, offset: int) -> Page[SessionPublic]:
    conn = db.connection()
    rows = _PAGE.run(conn, user_id, limit, offset)
    data: list[dict[str, Any]] = []
    if rows:
        grouped: dict[str, list[Sequence[Any]]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row)
        data = [_session(group[0][:5], (row[6:] for row in group)) for group in grouped.values()]
        total = int(rows[0][5])
    else:  # past the end (or nothing at all): the window count is not there
        total = int(_COUNT.run(conn, user_id)[0][0]) if offset else 0
    return _SESSION_PAGE.validate_python(
        {"data": data, "count": total, "limit": limit, "offset": offset}
    )
