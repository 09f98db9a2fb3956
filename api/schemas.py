"""API schemas, kept apart from the ORM models: `XCreate`, `XUpdate`, `XPublic`, `Page[X]`.

Every request body is a `RequestModel`: its text fields accept only text that can be stored
(no NUL character, no unpaired surrogate), and its JSON schema says so with a `pattern`, so
that what the schema calls valid and what the API accepts are the same thing.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from api.models import DatasetStatus, MessageRole, RunKind, RunStatus, SessionStatus

T = TypeVar("T")


# --- text ---------------------------------------------------------------------------------------

# The JSON-schema `pattern` of text without a NUL character (a regex in the ECMA-262, Python
# and Rust dialects alike).
NO_NUL_PATTERN = "^[^\\u0000]*$"
# Whitespace as Python's str.strip() sees it, spelled out, so that the pattern of a title
# means the same to every regex engine that reads the schema.
_SPACE = "".join(f"\\u{code:04x}" for code in range(0x3001) if chr(code).isspace())
NOT_BLANK_PATTERN = f"^[^\\u0000]*[^\\u0000{_SPACE}][^\\u0000]*$"


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text, in words a user can act on; None when it can.
    PostgreSQL text holds neither NUL nor (being UTF-8) an unpaired UTF-16 surrogate."""
    if "\x00" in value:
        return (
            f"must not contain the NUL character (\\u0000, found at position "
            f"{value.index(chr(0))}); remove it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains an unpaired UTF-16 surrogate (\\u{ord(value[exc.start]):04x} at position "
            f"{exc.start}), which is not text; send whole characters"
        )
    return None


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise PydanticCustomError("invalid_text", problem)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _check_text(item)


def _forbid_nul(schema: dict[str, Any]) -> None:
    """Add the no-NUL pattern to every free-text string of a (property's) JSON schema."""
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            _forbid_nul(option)
    if isinstance(schema.get("items"), dict):
        _forbid_nul(schema["items"])
    constrained = {"pattern", "format", "enum", "const", "$ref"} & schema.keys()
    if schema.get("type") == "string" and not constrained:
        schema["pattern"] = NO_NUL_PATTERN


class RequestModel(BaseModel):
    """The base of every request body: text must be storable text, for every field."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        _check_text(value)
        return value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        for prop in handler.resolve_ref_schema(json_schema).get("properties", {}).values():
            _forbid_nul(prop)
        return json_schema


def normalize_email(value: str) -> str:
    """Trimmed, NFKC-normalised, lower-cased and syntactically valid, so that one mailbox is
    one account however it is typed. Quarry sends no mail, so an address at a `.test` domain
    is as good as any (email_validator's `test_environment`); the other special-use domains
    (.local, .localhost, .invalid, .onion, .arpa) stay refused."""
    value = unicodedata.normalize("NFKC", value).strip()
    try:
        result = validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        # PydanticCustomError is a ValueError: callers outside a model catch it as one.
        raise PydanticCustomError(
            "invalid_email", "not a valid email address ({reason})", {"reason": str(exc)}
        ) from None
    return result.normalized.lower()


def _not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise PydanticCustomError("blank", "must not be blank: write at least one character")
    return stripped


TITLE_MAX = 200
Email = Annotated[
    str,
    StringConstraints(max_length=254),
    AfterValidator(normalize_email),
    WithJsonSchema(
        {
            "type": "string",
            "format": "email",
            "maxLength": 254,
            "description": "Not at a special-use domain (.local, .localhost, .invalid, .onion, "
            ".arpa); trimmed and lower-cased",
        }
    ),
]
# 1-200 characters as sent, not only whitespace; stored without the surrounding whitespace.
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TITLE_MAX),
    AfterValidator(_not_blank),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": TITLE_MAX,
            "pattern": NOT_BLANK_PATTERN,
            "description": "Not only whitespace, no NUL; surrounding whitespace is dropped",
        }
    ),
]


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Suggestions(BaseModel):
    """Questions to start a session with, built from its datasets' columns and values (the
    offline model answers each of them)."""

    data: list[str]


class Page(BaseModel, Generic[T]):
    """Every list endpoint answers one page: `?limit=` (1-200, default 50) and `?offset=`."""

    data: list[T]
    count: int = Field(description="Total number of items, all pages together")
    limit: int
    offset: int


# --- users and tokens ---------------------------------------------------------------------------


class UserRegister(RequestModel):
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


class LoginRequest(RequestModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ada@example.com", "password": "correct horse battery"}]
        }
    )


class RefreshRequest(RequestModel):
    refresh_token: str = Field(max_length=4096)

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "eyJhbGciOiJIUzI1NiIs..."}]}
    )


class LogoutRequest(RequestModel):
    refresh_token: str | None = Field(
        default=None, max_length=4096, description="Also revoke this refresh token's family."
    )
    everywhere: StrictBool = Field(
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


class ForkedTokens(BaseModel):
    rotated: TokenPair = Field(description="The presented token's successor, in its family")
    fork: TokenPair = Field(description="A new family of its own, revoked with the first")


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
    waiting: str | None = Field(
        default=None,
        description="Why a `processing` dataset is not being converted (no worker is running)",
    )


class DatasetDetail(DatasetPublic):
    profile: dict[str, Any] | None = Field(
        description="Per-column dtype, nulls, distinct count, min/max/mean, top values; sample rows"
    )


class DatasetUpdate(RequestModel):
    name: Title | None = None
    description: str | None = Field(default=None, max_length=5000)
    share_samples: StrictBool | None = Field(
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


class SessionCreate(RequestModel):
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


class SessionUpdate(RequestModel):
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


class MessageCreate(RequestModel):
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


# The largest valid body must fit under the 1 MiB body limit however it is encoded: JSON may
# escape each character, 12 bytes for one outside the BMP ("\\ud83e\\udd9c").
MAX_CODE_CHARS = 80_000


class ExecutionCreate(RequestModel):
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


class ErrorDetail(BaseModel):
    field: str = Field(description="`title`, `body`, `dataset_ids.0`...")
    message: str


class ErrorBody(BaseModel):
    code: str = Field(description="Stable and machine-readable: `validation_error`...")
    message: str = Field(description="What went wrong and what to do about it")
    request_id: str | None = Field(description="Quote it when you report a problem")
    details: list[ErrorDetail] | None = Field(
        default=None, description="With a 422: one entry per field in error"
    )


class ErrorResponse(BaseModel):
    error: ErrorBody
