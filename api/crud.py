"""Queries on user-owned rows. Every one filters by the owner: another user's id is simply
not found."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from api.deps import PageParams
from api.errors import NotFound

M = TypeVar("M")


def get_owned(
    db: Session,
    model: type[M],
    id_: uuid.UUID,
    user_id: uuid.UUID,
    what: str,
    *,
    options: Sequence[ORMOption] = (),
) -> M:
    stmt = select(model).where(model.id == id_, model.user_id == user_id)  # type: ignore[attr-defined]
    if options:
        stmt = stmt.options(*options)
    row = db.scalars(stmt).unique().first()
    if row is None:
        raise NotFound(what)
    return row


def owned_id(
    db: Session, model: type[Any], id_: uuid.UUID, user_id: uuid.UUID, what: str
) -> uuid.UUID:
    """The id, once the row is known to be the user's (only the id is read)."""
    found: uuid.UUID | None = db.scalar(
        select(model.id).where(model.id == id_, model.user_id == user_id)
    )
    if found is None:
        raise NotFound(what)
    return found


def get_owned_many(
    db: Session,
    model: type[M],
    ids: Sequence[uuid.UUID],
    user_id: uuid.UUID,
    what: str,
    *,
    options: Sequence[ORMOption] = (),
) -> list[M]:
    """The rows, in the order asked (each id once); NotFound names every id that is not
    the user's."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    stmt = select(model).where(model.id.in_(wanted), model.user_id == user_id)  # type: ignore[attr-defined]
    if options:
        stmt = stmt.options(*options)
    found = {row.id: row for row in db.scalars(stmt)}  # type: ignore[attr-defined]
    missing = [str(i) for i in wanted if i not in found]
    if missing:
        raise NotFound(f"{what} {', '.join(missing)}")
    return [found[i] for i in wanted]


def page(db: Session, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
    """One page of `stmt` (already filtered by owner and ordered) and the total count."""
    total = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(db.scalars(stmt.limit(params.limit).offset(params.offset)).unique())
    return rows, total
