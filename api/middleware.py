"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request).

`RequestContextMiddleware` gives every request an id (taken from `X-Request-ID` when it is
sane), binds it to the log context, records Prometheus metrics by route template, adds
security headers, turns unexpected exceptions into the standard error body and writes one
access-log line. `BodyLimitMiddleware` refuses bodies over the configured size before they
are read.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
import structlog
from fastapi import HTTPException
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware as StarletteCORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logs import get_logger
from api.metrics import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS

log = get_logger("quarry.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_DOCS_PATHS = ("/docs", "/redoc")
_API_CSP = "default-src 'none'; frame-ancestors 'none'"
# Metric labels must stay a small, fixed set: a client may send any token as the method.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _error_body(status: int, code: str, message: str, request_id: str | None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})


async def send_error(
    send: Send, status: int, code: str, message: str, request_id: str | None
) -> None:
    body = _error_body(status, code, message, request_id)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        path: str = scope["path"]
        method: str = scope["method"]
        started = time.perf_counter()
        status = 500
        response_started = False
        docs = path.startswith(_DOCS_PATHS)
        hsts = self.hsts

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["x-content-type-options"] = "nosniff"
                headers["x-frame-options"] = "DENY"
                headers["referrer-policy"] = "no-referrer"
                headers["cross-origin-opener-policy"] = "same-origin"
                if not docs:
                    # Swagger UI needs its scripts; everything else is data, not a page.
                    headers.setdefault("content-security-policy", _API_CSP)
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
                if hsts:
                    headers["strict-transport-security"] = "max-age=31536000; includeSubDomains"
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", method=method, path=path)
            status = 500
            if not response_started:
                await send_error(
                    send_wrapper,
                    500,
                    "internal_error",
                    "Something went wrong on our side. Quote the request id when you report it.",
                    request_id,
                )
        finally:
            HTTP_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            label = method if method in _METHODS else "other"
            HTTP_REQUESTS.labels(label, template, str(status)).inc()
            HTTP_LATENCY.labels(label, template).observe(elapsed)
            user_id = state.get("user_id")
            level = "debug" if path in _QUIET_PATHS and status < 400 else "info"
            getattr(log, level)(
                "request",
                method=method,
                path=path,
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client=(scope.get("client") or ("-",))[0],
                user_id=str(user_id) if user_id else None,
            )


class BodyLimitMiddleware:
    """Caps request bodies: `default` bytes, or a larger cap for listed (method, path) pairs
    such as the dataset upload, which enforces its exact limit while streaming."""

    def __init__(self, app: ASGIApp, *, default: int, overrides: dict[tuple[str, str], int]):
        self.app = app
        self.default = default
        self.overrides = overrides

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get((scope["method"], scope["path"].rstrip("/")), self.default)
        declared = _header(scope, b"content-length")
        request_id = scope.get("state", {}).get("request_id")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await send_error(send, 400, "bad_request", "Invalid Content-Length", request_id)
                return
            if too_big:
                await send_error(send, 413, "payload_too_large", _too_large(limit), request_id)
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=_too_large(limit))
            return message

        await self.app(scope, limited_receive, send)


def _too_large(limit: int) -> str:
    if limit >= 1024 * 1024:
        return f"Request body is larger than {limit // (1024 * 1024)} MB."
    return f"Request body is larger than {limit // 1024} KB."


class CORSMiddleware(StarletteCORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in Quarry's error shape
    rather than as plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        reason = bytes(response.body).decode(errors="replace")
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        body = _error_body(400, "cors_refused", f"{reason}.", request_id)
        skip = {"content-length", "content-type"}
        headers = {k: v for k, v in response.headers.items() if k.lower() not in skip}
        return Response(body, status_code=400, headers=headers, media_type="application/json")
