"""Prometheus metrics of the workers, served on a port of their own (WORKER_METRICS_PORT).

A Celery worker is a parent process and prefork children that do the work, so the metrics
use prometheus-client's multiprocess mode: each child writes its samples to files under
PROMETHEUS_MULTIPROC_DIR and the parent's HTTP endpoint adds them up. That variable must be
set before prometheus_client is first imported; `worker/celery_app.py` sets it (a fresh
private folder) when the process is a worker and the operator did not choose one. Outside a
worker (tests calling the task code in-process) the same metrics live in the default
registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import Counter, Histogram

from api.logs import get_logger

log = get_logger("quarry.worker.metrics")

RUNS = Counter(
    "quarry_worker_runs_total",
    "Runs a worker finished, by kind (turn: an agent answer; execution: the user's own code) "
    "and outcome (succeeded, failed, cancelled).",
    ["kind", "outcome"],
)
RUN_SECONDS = Histogram(
    "quarry_worker_run_duration_seconds",
    "Time from claiming a run to settling it, by kind.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
SANDBOX_RUNS = Counter(
    "quarry_worker_sandbox_executions_total",
    "Snippets run in the sandbox, by backend and outcome (ok, error, timeout, memory, ...).",
    ["backend", "outcome"],
)
SANDBOX_SECONDS = Histogram(
    "quarry_worker_sandbox_duration_seconds",
    "Time one snippet took in the sandbox, by backend.",
    ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LLM_SECONDS = Histogram(
    "quarry_worker_llm_request_duration_seconds",
    "Time one chat-model call took, by model.",
    ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
LLM_TOKENS = Counter(
    "quarry_worker_llm_tokens_total",
    "Tokens sent to (prompt) and received from (completion) the chat model, by model.",
    ["model", "type"],
)
REAPED = Counter(
    "quarry_worker_reaped_total",
    "Runs and datasets the reaper acted on, by what and action (requeued, failed).",
    ["what", "action"],
)
DATASET_CONVERSIONS = Counter(
    "quarry_worker_dataset_conversions_total",
    "Uploads converted and profiled, by source format and outcome (ready, failed).",
    ["format", "outcome"],
)
DATASET_SECONDS = Histogram(
    "quarry_worker_dataset_conversion_duration_seconds",
    "Time to convert and profile one upload.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)


def multiprocess_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def clear_stale_files() -> None:
    """A restarted worker must not add up the previous run's samples."""
    folder = multiprocess_dir()
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def serve(port: int) -> bool:
    """The endpoint, in the worker's parent process. False when it could not listen (a
    second worker on the same host: give each its own WORKER_METRICS_PORT)."""
    if not port:
        return False
    from prometheus_client import CollectorRegistry, start_http_server

    registry = None
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        if registry is None:
            start_http_server(port)
        else:
            start_http_server(port, registry=registry)
    except OSError as exc:
        log.warning("worker metrics endpoint not started", port=port, error=str(exc))
        return False
    log.info("worker metrics endpoint", port=port)
    return True


def child_exited(pid: int) -> None:
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
