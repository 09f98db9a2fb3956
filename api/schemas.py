"""API schemas, kept apart from the ORM models: `XCreate`, `XUpdate`, `XPublic`, `Page[X]`."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from api.models import DatasetStatus, MessageRole, RunKind, RunStatus, SessionStatus

T = TypeVar("T")


def normalize_email(value: str) -> str:
    """Trimmed, NFKC-normalised, lower-cased and syntactically valid, so that one mailbox is
    one account however it is typed."""
    value = unicodedata.normalize("NFKC", value).strip()
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address ({exc})") from None
    return result.normalized.lower()


Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(normalize_email)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """Every list endpoint answers one page: `?limit=` (1-200, default 50) and `?offset=`."""

    data: list[T]
    count: int = Field(description="Total number of items, all pages together")
    limit: int
    offset: int


# --- users and tokens ---------------------------------------------------------------------------


class UserRegister(BaseModel):
    email: Email
    password: str = Field(min_length=1, max_length=128)
    full_name: str | None = Field(default=None, max_length=200)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "correct horse battery",
                    "full_name": "Ada",
                }
            ]
        }
    )


class LoginRequest(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ada@example.com", "password": "correct horse battery"}]
        }
    )


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=4096)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "eyJhbGciOiJIUzI1NiIs..."}]}
    )


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(
        default=None, max_length=4096, description="Also revoke this refresh token's family."
    )
    everywhere: bool = Field(
        default=False, description="Sign out every device: all refresh and access tokens."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"refresh_token": "eyJhbGciOiJIUzI1NiIs...", "everywhere": False}]
        }
    )


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires")


class UserPublic(ORMModel):
    id: uuid.UUID
    email: str
    full_name: str | None
    is_active: bool
    created_at: datetime


# --- datasets ---------------------------------------------------------------------------------


class DatasetPublic(ORMModel):
    id: uuid.UUID
    name: str
    description: str | None
    original_filename: str
    archive_member: str | None
    sheet_name: str | None
    source_format: str
    status: DatasetStatus
    share_samples: bool = True
    error: str | None
    sha256: str
    size_bytes: int
    stored_bytes: int | None
    row_count: int | None
    column_count: int | None
    encoding: str | None
    delimiter: str | None
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None


class DatasetDetail(DatasetPublic):
    profile: dict[str, Any] | None = Field(
        description="Per-column dtype, nulls, distinct count, min/max/mean, top values; sample rows"
    )


class DatasetUpdate(BaseModel):
    name: Title | None = None
    description: str | None = Field(default=None, max_length=5000)
    share_samples: bool | None = Field(
        default=None,
        description="May the agent send a few sample rows to the LLM (else schema and "
        "statistics only)?",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "Census 2020", "description": "Sample of the 2020 census"}]
        }
    )


class UploadResult(BaseModel):
    data: list[DatasetPublic]
    count: int


class DatasetPreview(BaseModel):
    columns: list[dict[str, str]]
    rows: list[dict[str, Any]]
    limit: int
    total_rows: int


# --- sessions, messages, runs ---------------------------------------------------------------------


class SessionCreate(BaseModel):
    title: Title | None = None
    dataset_ids: list[uuid.UUID] = Field(default_factory=list, max_length=20)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Census questions",
                    "dataset_ids": ["01a1fcd6-2f47-78c9-ad51-7ff1ab86e3e0"],
                }
            ]
        }
    )


class SessionUpdate(BaseModel):
    title: Title | None = None
    status: SessionStatus | None = None
    dataset_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=20, description="Replaces the attached datasets"
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"title": "Income by education", "status": "archived"}]}
    )


class SessionDatasetPublic(BaseModel):
    id: uuid.UUID | None = Field(description="None once the dataset was deleted")
    name: str
    status: DatasetStatus | Literal["deleted"]
    row_count: int | None = None
    column_count: int | None = None
    added_at: datetime
    deleted_at: datetime | None = None


class SessionPublic(ORMModel):
    id: uuid.UUID
    title: str
    status: SessionStatus
    created_at: datetime
    updated_at: datetime
    datasets: list[SessionDatasetPublic]


class MessageCreate(BaseModel):
    content: str = Field(min_length=1, max_length=20_000)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"content": "What is the average income by education?"}]}
    )


class MessagePublic(ORMModel):
    id: uuid.UUID
    session_id: uuid.UUID
    run_id: uuid.UUID | None
    role: MessageRole
    content: str
    payload: dict[str, Any] | None
    created_at: datetime


class RunPublic(ORMModel):
    id: uuid.UUID
    session_id: uuid.UUID
    kind: RunKind = Field(description="`turn` (an agent answer) or `execution` (your own code)")
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    error: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = Field(description="Estimated LLM cost of the turn, in US dollars")
    waiting: str | None = Field(
        default=None,
        description="Why a queued run is not starting (no worker is running), when known",
    )


class TurnAccepted(BaseModel):
    run_id: uuid.UUID
    message: MessagePublic
    run: RunPublic


MAX_CODE_CHARS = 100_000


class ExecutionCreate(BaseModel):
    code: str = Field(
        min_length=1,
        max_length=MAX_CODE_CHARS,
        description="Python to run in the sandbox, with the session's datasets loaded",
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"code": "df.groupby('region')['price'].mean()"}]}
    )


class ExecutionAccepted(BaseModel):
    run_id: uuid.UUID
    run: RunPublic


class CodeExecutionPublic(ORMModel):
    id: uuid.UUID
    session_id: uuid.UUID
    run_id: uuid.UUID | None
    code: str
    backend: str
    outcome: str = Field(
        description="ok, error (the code raised), refused (policy), timeout, memory, cancelled"
    )
    error: dict[str, Any] | None
    result: dict[str, Any] | None = Field(
        description="stdout, result, tables, notes and the variables kept for later snippets"
    )
    duration_ms: int
    created_at: datetime


class VisualizationPublic(ORMModel):
    id: uuid.UUID
    session_id: uuid.UUID
    run_id: uuid.UUID | None
    code_execution_id: uuid.UUID | None
    title: str
    figure: dict[str, Any] | None = Field(description="Plotly figure JSON (data, layout)")
    created_at: datetime
    updated_at: datetime


class QueueHealth(BaseModel):
    workers: int = Field(description="Workers consuming the queue that sent a heartbeat lately")
    depth: int | None = Field(description="Messages waiting in the broker (null: unreadable)")


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="`degraded`: the API works but a queue has no live worker (see `queues`)"
    )
    checks: dict[str, str] = Field(default_factory=dict)
    queues: dict[str, QueueHealth] | None = None


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody
