"""Sandboxes for the agent's code: one interface (`Backend.run(job) -> result`), three
backends chosen by SANDBOX_BACKEND: `process` (default), `docker`, `kubernetes`.

`BACKENDS` is the one registry of them: `get_backend`, the CLI's `--backend` choices and
the settings' `SANDBOX_BACKEND` values (`api.config.SANDBOX_BACKENDS`, which must name the
same backends: the API never imports the worker) all come from it. A backend's module is
imported only when it is chosen (the docker and kubernetes clients are optional).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from api.config import SANDBOX_BACKENDS
from worker.sandbox.base import Backend, SandboxUnavailable, default_limits

if TYPE_CHECKING:
    from api.config import Settings

__all__ = ["BACKENDS", "Backend", "SandboxUnavailable", "default_limits", "get_backend"]

# name -> "module:class"; the class's `from_settings` builds it.
BACKENDS: dict[str, str] = {
    "process": "worker.sandbox.process:ProcessBackend",
    "docker": "worker.sandbox.docker:DockerBackend",
    "kubernetes": "worker.sandbox.kubernetes:KubernetesBackend",
}
if tuple(BACKENDS) != SANDBOX_BACKENDS:  # pragma: no cover - a change made in one place only
    raise ImportError(f"sandbox backends {tuple(BACKENDS)} != settings' {SANDBOX_BACKENDS}")


def backend_class(name: str) -> type[Backend]:
    try:
        module, _, attribute = BACKENDS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown sandbox backend {name!r}") from None
    backend: type[Backend] = getattr(importlib.import_module(module), attribute)
    return backend


def get_backend(settings: Settings, name: str | None = None) -> Backend:
    return backend_class(name or settings.sandbox_backend).from_settings(settings)
