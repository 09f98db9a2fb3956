"""Audit trail: who did what security-relevant thing, from where, in which request."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from api.deps import client_ip, user_agent
from api.models import AuditEvent


def audit(
    db: Session,
    request: Request,
    action: str,
    *,
    user_id: uuid.UUID | None = None,
    target: tuple[str, uuid.UUID | str] | None = None,
    **details: Any,
) -> None:
    """Adds the event to the caller's transaction (it is written when the caller commits)."""
    db.add(
        AuditEvent(
            user_id=user_id,
            action=action,
            target_type=target[0] if target else None,
            target_id=str(target[1]) if target else None,
            ip=client_ip(request),
            user_agent=user_agent(request),
            request_id=getattr(request.state, "request_id", None),
            details=details or None,
        )
    )
