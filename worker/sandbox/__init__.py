"""Sandboxes for the agent's code: one interface (`Backend.run(job) -> result`), three
backends chosen by SANDBOX_BACKEND: `process` (default), `docker`, `kubernetes`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.sandbox.base import Backend, SandboxUnavailable

if TYPE_CHECKING:
    from api.config import Settings

__all__ = ["Backend", "SandboxUnavailable", "default_limits", "get_backend"]


def default_limits(settings: Settings) -> dict[str, int]:
    return {
        "timeout_s": settings.sandbox_timeout_s,
        "memory_mb": settings.sandbox_memory_mb,
        "max_output_bytes": settings.sandbox_max_output_mb << 20,
    }


def get_backend(settings: Settings, name: str | None = None) -> Backend:
    name = name or settings.sandbox_backend
    if name == "process":
        from worker.sandbox.process import ProcessBackend, ProcessConfig

        return ProcessBackend(
            ProcessConfig(
                warm=settings.sandbox_mode == "warm",
                pool_size=settings.sandbox_pool_size,
                allow_weak_isolation=settings.sandbox_allow_weak_isolation,
                uid_base=settings.sandbox_uid_base,
                limits=default_limits(settings),
            )
        )
    if name == "docker":
        from worker.sandbox.docker import DockerBackend

        return DockerBackend.from_settings(settings)
    if name == "kubernetes":
        from worker.sandbox.kubernetes import KubernetesBackend

        return KubernetesBackend.from_settings(settings)
    raise ValueError(f"unknown sandbox backend {name!r}")
