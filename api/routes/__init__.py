"""Routers. Each carries its full path prefix (no prefix is added when including it), so a
route's template is its public path: that is the label metrics and logs use."""

from fastapi import APIRouter

from api.routes import auth, datasets, health, info, results, sessions

ROUTERS: list[APIRouter] = [
    auth.router,
    info.router,
    datasets.router,
    sessions.router,
    results.router,
    health.router,
]
