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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session

from api.errors import NotFound
from api.models import AnalysisSession, Dataset, SessionDataset
from api.schemas import SessionDatasetPublic, SessionPublic

_s = AnalysisSession.__table__.c
_l = SessionDataset.__table__.c
_d = Dataset.__table__.c
_SESSION = (_s.id, _s.title, _s.status, _s.created_at, _s.updated_at)
_LINK = (
    _l.dataset_id,
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
_ONE = (
    select(*_SESSION, *_LINK)
    .select_from(_LINKED)
    .where(_s.id == bindparam("session_id"), _s.user_id == bindparam("user_id"))
    .order_by(_l.added_at, _l.id)
)
# A page of sessions, then the datasets of exactly those sessions.
_PAGE = (
    select(*_SESSION)
    .where(_s.user_id == bindparam("user_id"))
    .order_by(_s.updated_at.desc(), _s.id.desc())
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)
_COUNT = (
    select(func.count())
    .select_from(AnalysisSession.__table__)
    .where(_s.user_id == bindparam("user_id"))
)
_LINKS = (
    select(_l.session_id, *_LINK)
    .select_from(SessionDataset.__table__.outerjoin(Dataset.__table__, _d.id == _l.dataset_id))
    .where(_l.session_id.in_(bindparam("session_ids", expanding=True)))
    .order_by(_l.session_id, _l.added_at, _l.id)
)


def _dataset(row: Sequence[Any]) -> SessionDatasetPublic:
    dataset_id, link_name, added_at, deleted_at, name, status, rows, columns = row
    present = name is not None
    return SessionDatasetPublic(
        id=dataset_id,
        name=name if present else link_name,
        status=status if present else "deleted",
        row_count=rows,
        column_count=columns,
        added_at=added_at,
        deleted_at=deleted_at,
    )


def _session(head: Sequence[Any], links: Iterable[Sequence[Any]]) -> SessionPublic:
    session_id, title, status, created_at, updated_at = head
    return SessionPublic(
        id=session_id,
        title=title,
        status=status,
        created_at=created_at,
        updated_at=updated_at,
        datasets=[_dataset(link) for link in links if link[2] is not None],
    )


def session_public(db: Session, session_id: uuid.UUID, user_id: uuid.UUID) -> SessionPublic:
    rows: list[Row[Any]] = list(
        db.connection().execute(_ONE, {"session_id": session_id, "user_id": user_id})
    )
    if not rows:
        raise NotFound("Session")
    return _session(rows[0][:5], (row[5:] for row in rows))


def session_page(
    db: Session, user_id: uuid.UUID, limit: int, offset: int
) -> tuple[list[SessionPublic], int]:
    conn = db.connection()
    heads = list(conn.execute(_PAGE, {"user_id": user_id, "limit": limit, "offset": offset}))
    if len(heads) < limit and (heads or offset == 0):
        total = offset + len(heads)  # this page is the last one: no need to count
    else:
        total = int(conn.execute(_COUNT, {"user_id": user_id}).scalar_one())
    links: dict[uuid.UUID, list[Any]] = defaultdict(list)
    if heads:
        for row in conn.execute(_LINKS, {"session_ids": [h[0] for h in heads]}):
            links[row[0]].append(row)
    return [_session(head, (link[1:] for link in links[head[0]])) for head in heads], total
