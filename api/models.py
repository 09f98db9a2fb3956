"""The system of record. Every row a user owns carries `user_id`; queries filter on it."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy import (
    true as sa_true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.db import Base, JSONType, UTCDateTime, new_id, utcnow


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL enum: adding a value stays a one-line
    # migration, and SQLite gets the same check.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=new_id)


def _user_fk(*, index: bool = True) -> Mapped[uuid.UUID]:
    # index=False where a composite index already leads with user_id.
    return mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=index)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow)


def _updated() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DatasetStatus(enum.StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class SessionStatus(enum.StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class RunKind(enum.StrEnum):
    TURN = "turn"  # an agent turn answering a question
    EXECUTION = "execution"  # code the user ran directly, no LLM


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = _pk()
    email: Mapped[str] = mapped_column(String(254), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Carried in every access token; "sign out everywhere" increments it, which invalidates
    # every access token issued before.
    token_version: Mapped[int] = mapped_column(Integer, default=0)


class RefreshToken(Base):
    """One row per refresh token issued. A token is used once: refreshing marks it rotated
    and issues the next one in the same family; presenting a rotated token again means it
    was stolen, and the whole tree is revoked: the family, the family it was forked from
    (`root_family_id`, see `POST /api/auth/fork`) and every family forked from that."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # the token's jti
    user_id: Mapped[uuid.UUID] = _user_fk()
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    root_family_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)  # forked from
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))


class RevokedAccessToken(Base):
    """Access tokens signed out before they expire (kept until they would have expired)."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = _user_fk()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime] = _created()


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        Index("ix_datasets_user_id_created_at", "user_id", "created_at"),
        Index("ix_datasets_user_id_sha256", "user_id", "sha256"),
        Index("ix_datasets_upload_id", "upload_id"),
        Index("ix_datasets_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk(index=False)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    original_filename: Mapped[str] = mapped_column(String(255))
    # Where inside the upload the table came from: a ZIP member and/or a workbook sheet.
    archive_member: Mapped[str | None] = mapped_column(String(512))
    sheet_name: Mapped[str | None] = mapped_column(String(255))
    source_format: Mapped[str] = mapped_column(String(16))
    status: Mapped[DatasetStatus] = mapped_column(
        _enum(DatasetStatus, "dataset_status"), default=DatasetStatus.PROCESSING
    )
    error: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    column_count: Mapped[int | None] = mapped_column(Integer)
    encoding: Mapped[str | None] = mapped_column(String(32))
    delimiter: Mapped[str | None] = mapped_column(String(4))
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # may the agent send a few sample rows to the LLM, or only the schema and profile?
    share_samples: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The conversion, done by a worker (worker/datasets.py) from the database alone: the
    # upload the table came from (its staging folder is DATA_DIR/uploads/<upload_id>, shared
    # by every table of the upload), what the converter needs to read it (the inspected
    # table, its path relative to that folder; cleared once settled), when the message last
    # went to the broker, the converting worker's heartbeat (NULL: waiting for a worker),
    # how often a worker claimed it and how often the reaper sent it again.
    upload_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AnalysisSession(Base):
    __tablename__ = "analysis_sessions"
    __table_args__ = (Index("ix_analysis_sessions_user_id_updated_at", "user_id", "updated_at"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk(index=False)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[SessionStatus] = mapped_column(
        _enum(SessionStatus, "session_status"), default=SessionStatus.ACTIVE
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()

    dataset_links: Mapped[list[SessionDataset]] = relationship(
        back_populates="session",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="SessionDataset.added_at",
    )


class SessionDataset(Base):
    """A dataset attached to a session. The link outlives the dataset: when the dataset is
    deleted `dataset_id` becomes NULL and the session still says which one it used."""

    __tablename__ = "session_datasets"
    __table_args__ = (UniqueConstraint("session_id", "dataset_id"),)

    id: Mapped[uuid.UUID] = _pk()
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_sessions.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[uuid.UUID] = _user_fk()
    dataset_name: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime] = _created()
    dataset_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    session: Mapped[AnalysisSession] = relationship(back_populates="dataset_links")
    dataset: Mapped[Dataset | None] = relationship(lazy="joined")


class Run(Base):
    """One agent turn, or one direct execution of the user's code."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_session_id_created_at", "session_id", "created_at"),
        Index("ix_runs_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_sessions.id", ondelete="CASCADE")
    )
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.QUEUED
    )
    kind: Mapped[RunKind] = mapped_column(
        _enum(RunKind, "run_kind"), default=RunKind.TURN, server_default=RunKind.TURN.value
    )
    # the snippet of a direct execution (a turn's question is its user Message)
    code: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # when the message for it last went to the broker, and how often the reaper re-sent it
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(0))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_session_id_created_at", "session_id", "created_at"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_sessions.id", ondelete="CASCADE")
    )
    # The turn this message asked for (user) or came out of (assistant).
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    role: Mapped[MessageRole] = mapped_column(_enum(MessageRole, "message_role"))
    content: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()


class RunEvent(Base):
    """An ordered step of a run (plan, code, execution result, chart, answer, error, done)."""

    __tablename__ = "run_events"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[uuid.UUID] = _pk()
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID] = _user_fk()
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = _created()


class CodeExecution(Base):
    __tablename__ = "code_executions"
    __table_args__ = (
        Index("ix_code_executions_session_id_created_at", "session_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_sessions.id", ondelete="CASCADE")
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    code: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(16))
    # ok, error (raised, refused by the policy, crashed), timeout, memory, cancelled
    # (worker/agent/tools.py outcome_of)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    output_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _created()


class Visualization(Base):
    __tablename__ = "visualizations"
    __table_args__ = (Index("ix_visualizations_session_id_created_at", "session_id", "created_at"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_sessions.id", ondelete="CASCADE")
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    code_execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("code_executions.id", ondelete="SET NULL"), index=True
    )
    title: Mapped[str] = mapped_column(String(300))
    figure: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class AuditEvent(Base):
    """Security-relevant actions: sign-ins (good and bad), token misuse, deletions."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[uuid.UUID] = _pk()
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created()


class WorkerHeartbeat(Base):
    """A Celery worker that is alive, as it says itself: its main process writes `seen_at`
    every WORKER_HEARTBEAT_S while its consumer runs, and deletes its row when it stops.
    The API reads these to tell whether each queue has a consumer (`/readyz`, metrics, and
    the "no worker is running" notice a waiting user gets)."""

    __tablename__ = "worker_heartbeats"

    id: Mapped[uuid.UUID] = _pk()
    name: Mapped[str] = mapped_column(String(255), unique=True)  # node name + pid
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(255))  # comma-separated
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    beat: Mapped[bool] = mapped_column(Boolean, default=False)  # runs the reapers' schedule
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
