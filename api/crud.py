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


def page(db: Session, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
    """One page of `stmt` (already filtered by owner and ordered) and the total count."""
    total = db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(db.scalars(stmt.limit(params.limit).offset(params.offset)).unique())
    return rows, total
