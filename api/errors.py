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
from starlette.routing import Match

from api.logs import get_logger
from api.schemas import ErrorResponse

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


def _not_unicode(value: Any) -> str:
    """Pydantic's words for a string with an unpaired UTF-16 surrogate, made actionable."""
    where = ""
    if isinstance(value, str):
        at = next((i for i, ch in enumerate(value) if 0xD800 <= ord(ch) <= 0xDFFF), None)
        if at is not None:
            where = f" (\\u{ord(value[at]):04x} at position {at})"
    return f"contains an unpaired UTF-16 surrogate{where}, which is not text; send whole characters"


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
        if err.get("type") == "string_unicode":
            msg = _not_unicode(err.get("input"))
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


_METHOD_ORDER = {m: i for i, m in enumerate(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"))}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (Starlette's own 405 names only
    the methods of the first route that matched the path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods, key=lambda m: (_METHOD_ORDER.get(m, len(_METHOD_ORDER)), m))


def _body_not_json(exc: StarletteHTTPException) -> str | None:
    """FastAPI answers a JSON body it cannot even decode (not UTF-8, nested too deeply) with a
    bare 400; that is the same mistake as malformed JSON, which answers 422."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None or isinstance(cause, StarletteHTTPException):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return "Request body is not valid JSON (it is not UTF-8 text)"
    if isinstance(cause, RecursionError):
        return "Request body is not valid JSON (it is nested too deeply)"
    if isinstance(cause, ValueError):
        return f"Request body is not valid JSON ({cause})"
    return None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    not_json = _body_not_json(exc)
    if not_json is not None:
        details = [{"field": "body", "message": not_json}]
        return error_response(
            request, 422, "validation_error", f"body: {not_json}", details=details
        )
    code = _CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed here; use {_or_list(allowed)}."
    return error_response(request, exc.status_code, code, message, headers=headers)


def _or_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


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
    document_errors(app)


# --- the same errors in the OpenAPI schema ------------------------------------------------------

_REF = "#/components/schemas/"
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": _REF + "ErrorResponse"}}}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "`Bearer`",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _document_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    has_body = "requestBody" in operation
    if operation.get("security"):
        responses.setdefault("401", {"description": "Missing, invalid or expired access token"})
        responses["401"].setdefault("headers", _WWW_AUTHENTICATE)
    if has_body or operation.get("parameters"):
        responses.setdefault(
            "422", {"description": "A parameter or the body is invalid; the message says which"}
        )
    if has_body:
        responses.setdefault("413", {"description": "The request body is over the size limit"})
    if path.startswith("/api/"):
        responses.setdefault("503", {"description": "The database is unavailable; retry later"})
        responses["503"].setdefault("headers", _RETRY_AFTER)
    if "429" in responses:
        responses["429"].setdefault("headers", _RETRY_AFTER)
    for status, response in responses.items():
        if not status.startswith(("4", "5")):
            continue
        content = response.get("content") or {}
        refs = [media.get("schema", {}).get("$ref") for media in content.values()]
        # FastAPI's own 422 body ({"detail": [...]}) is not what the handlers answer.
        if not content or _REF + "HTTPValidationError" in refs:
            response["content"] = _ERROR_CONTENT


def add_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Document, on every operation of an OpenAPI schema, the errors the handlers and the
    middleware answer: their shape, and the statuses every route can meet (401 where a token
    is needed, 422 where there is input, 413 where there is a body, 503 where the database is
    used), with the Retry-After and WWW-Authenticate headers they carry."""
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _document_operation(path, operation)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template=_REF + "{model}")
    components.update(error_schema.pop("$defs", {}), ErrorResponse=error_schema)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def document_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI schema say what its errors are (see add_error_responses)."""
    generate = app.openapi
    documented: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not documented or documented[0] is not schema:
            documented[:] = [add_error_responses(schema)]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
