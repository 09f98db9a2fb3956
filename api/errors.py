"""One error shape for every failure: `{"error": {"code", "message", "request_id"}}`.

Clients never see a stack trace; the log line with the same request id has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import psycopg2
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.logs import get_logger

log = get_logger("quarry.errors")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


class APIError(Exception):
    """An expected failure with a message meant for the user."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.code = code or _CODES.get(self.status_code, self.code)
        self.headers = dict(headers or {})
        self.details = details


class NotFound(APIError):
    status_code = 404
    code = "not_found"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Unauthorized(APIError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "Not authenticated") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Conflict(APIError):
    status_code = 409
    code = "conflict"


class Unprocessable(APIError):
    status_code = 422
    code = "validation_error"


class TooLarge(APIError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMedia(APIError):
    status_code = 415
    code = "unsupported_media_type"


class TooManyRequests(APIError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: Any = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id_of(request)}
    if details is not None:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def _field(loc: Sequence[Any]) -> str:
    # ("body", "email") -> "email"; ("query", "limit") -> "limit"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_message(errors: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    details = []
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            details.append(
                {"field": "body", "message": f"Request body is not valid JSON ({reason})"}
            )
            continue
        msg = str(err.get("msg", "invalid value"))
        details.append({"field": _field(err.get("loc", ())), "message": msg})
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    if len(details) > 5:
        message += f"; and {len(details) - 5} more"
    return message or "Invalid request", details


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(
        request, exc.status_code, exc.code, exc.message, headers=exc.headers, details=exc.details
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(request, exc.status_code, code, message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, details = _validation_message(exc.errors())
    return error_response(request, 422, "validation_error", message, details=details)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Connection lost, server restarting, statement timeout, serialization failure: the
    # request may well succeed when retried, and the client deserves to know that.
    # The driver's own message only: SQLAlchemy's wrapper would add the statement.
    reason = getattr(exc, "orig", None) or exc
    log.warning("database unavailable", error=type(reason).__name__, detail=str(reason)[:300])
    return error_response(
        request,
        503,
        "database_unavailable",
        "The database is unavailable right now; retry in a moment.",
        headers={"Retry-After": "2"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        psycopg2.OperationalError,
        psycopg2.InterfaceError,
    ):
        app.add_exception_handler(error, _database_unavailable)
