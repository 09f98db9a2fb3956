"""Prometheus metrics of the API (one uvicorn process per pod: the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "quarry_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "quarry_http_request_duration_seconds",
    "Time from request received to response finished, by method and route template.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_IN_FLIGHT = Gauge("quarry_http_requests_in_flight", "HTTP requests being processed right now.")
LOGINS = Counter(
    "quarry_auth_logins_total",
    "Sign-in attempts by outcome (succeeded, failed, throttled).",
    ["outcome"],
)
TOKEN_REUSE = Counter(
    "quarry_auth_refresh_reuse_total",
    "Rotated refresh tokens presented again (each revoked a token family).",
)
QUEUE_WORKERS = Gauge(
    "quarry_queue_workers",
    "Workers consuming each queue that sent a heartbeat lately (0: nothing runs that work).",
    ["queue"],
)
QUEUE_DEPTH = Gauge(
    "quarry_queue_depth",
    "Messages waiting in the broker for each queue (not those a worker has taken).",
    ["queue"],
)
