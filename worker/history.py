"""The conversation a turn starts from when its checkpoint is missing, and the note that
tells the model about the user's own code runs since the last question.
"""

from __future__ import annotations

import uuid

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from api.models import CodeExecution, Message, MessageRole, Run, RunKind
from worker.agent.tools import Execution


def history_from_messages(db: Session, session_id: uuid.UUID, before: Message) -> list[BaseMessage]:
    """The conversation as the Message table has it (when the checkpoint is missing)."""
    rows = db.scalars(
        select(Message)
        .where(
            Message.session_id == session_id,
            Message.user_id == before.user_id,
            Message.created_at <= before.created_at,
            Message.id != before.id,
        )
        .order_by(Message.created_at, Message.id)
    ).all()
    out: list[BaseMessage] = []
    for m in rows:
        if m.role == MessageRole.USER:
            out.append(HumanMessage(content=m.content, id=str(m.id)))
        elif m.role == MessageRole.ASSISTANT:
            out.append(AIMessage(content=m.content, id=str(m.id)))
    return out


DIRECT_NOTE_LIMIT = 5  # direct executions mentioned to the model, newest last


def direct_executions_note(db: Session, question: Message) -> HumanMessage | None:
    """Code the user ran themselves since the last answer, so that "explain this result"
    means something to the model: the code and a summary of what it gave."""
    since = (
        select(func.max(Message.created_at))
        .where(
            Message.session_id == question.session_id,
            Message.user_id == question.user_id,
            Message.role == MessageRole.ASSISTANT,
            Message.created_at < question.created_at,
        )
        .scalar_subquery()
    )
    stmt = (
        select(CodeExecution)
        .join(Run, CodeExecution.run_id == Run.id)
        .where(
            Run.kind == RunKind.EXECUTION,
            CodeExecution.session_id == question.session_id,
            CodeExecution.user_id == question.user_id,
            CodeExecution.created_at < question.created_at,
            or_(since.is_(None), CodeExecution.created_at > since),
        )
        .order_by(CodeExecution.created_at.desc())
        .limit(DIRECT_NOTE_LIMIT)
    )
    rows = list(reversed(db.scalars(stmt).all()))
    if not rows:
        return None
    parts = ["(Context: since your last answer I ran this code myself in the sandbox.)"]
    for row in rows:
        stored = row.result or {}
        done = Execution(
            id=row.id,
            result={**stored, "ok": row.outcome == "ok", "error": row.error},
            kept=list(stored.get("workspace") or []),
        )
        parts.append(f"```python\n{row.code[:4000]}\n```\n{done.summary()}")
    return HumanMessage(content="\n\n".join(parts), id=f"direct-{rows[-1].id}")
