"""Handing work to the workers, by task name (the API never imports `worker`).

The broker is Redis when `REDIS_URL` is set; otherwise a folder of message files under
`DATA_DIR/broker` (api/broker.py), so that embedded mode needs no server. Messages are
JSON. PostgreSQL, not the broker, is the source of truth: a message that is lost (broker
flushed, worker killed) leaves a run the reaper re-queues or fails, so callers enqueue
*after* their transaction commits and treat a failed send as "the reaper will pick it up".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api import broker  # registers Quarry's transports with kombu
from api.config import Settings
from api.logs import get_logger

log = get_logger("quarry.queue")

RUN_TURN = "worker.tasks.run_turn"
EXECUTE_CODE = "worker.tasks.execute_code"
REAP_RUNS = "worker.tasks.reap_runs"
CONVERT_UPLOAD = "worker.tasks.convert_upload"
REAP_DATASETS = "worker.tasks.reap_datasets"
PURGE_TOKENS = "worker.tasks.purge_expired_tokens"

# Task name -> queue (DESIGN.md: analysis = chat turns, datasets = uploads, maintenance).
TASK_QUEUES = {
    RUN_TURN: "analysis",
    EXECUTE_CODE: "analysis",
    CONVERT_UPLOAD: "datasets",
    REAP_RUNS: "maintenance",
    REAP_DATASETS: "maintenance",
    PURGE_TOKENS: "maintenance",
}
QUEUES = ("analysis", "datasets", "maintenance")


def task_for(kind: str) -> str:
    """The task that carries out a run of this kind (`turn` or `execution`)."""
    return EXECUTE_CODE if kind == "execution" else RUN_TURN


def broker_folder(settings: Settings) -> Path:
    return (settings.data_dir / "broker").resolve()


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings both sides share (the worker adds its own on top)."""
    config: dict[str, Any] = {
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,  # run state lives in the database
        "result_backend": None,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": "analysis",
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 2.0,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.1},
    }
    if settings.redis_url:
        config["broker_url"] = settings.redis_url
        # An unacknowledged message comes back after this long: above the longest turn and
        # conversion, or a slow one would be delivered twice (both are idempotent by id,
        # but it wastes a worker).
        longest = max(settings.turn_time_limit_s, settings.ingest_timeout_seconds)
        config["broker_transport_options"] = {
            "visibility_timeout": longest * 2 + 60,
            "global_keyprefix": settings.redis_prefix + "celery:",
        }
    else:
        folder = broker_folder(settings)
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_url"] = f"{broker.SCHEME}://"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # broadcasts (worker control, pidbox); kombu's default is ./control
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,  # the default (1 s) would delay every turn
        }
    return config


class TaskQueue:
    """The API's producer. Sending never raises: a run whose message did not go out stays
    queued in the database and the reaper sends it again."""

    def __init__(self, settings: Settings) -> None:
        from celery import Celery

        self._app = Celery("quarry-api", set_as_current=False)
        self._app.conf.update(celery_config(settings))

    def send(self, task: str, *args: Any, request_id: str | None = None) -> bool:
        try:
            self._app.send_task(
                task,
                args=list(args),
                queue=TASK_QUEUES[task],
                headers={"quarry_request_id": request_id} if request_id else None,
            )
        except Exception as exc:  # broker down: the reaper re-sends from the database
            log.warning("could not enqueue", task=task, error=str(exc))
            return False
        return True

    def close(self) -> None:
        self._app.close()


def queue_depths(settings: Settings, client: Any = None) -> dict[str, int | None]:
    """Messages waiting in the broker per queue (not those a worker has taken); None for a
    queue that could not be read (the broker is down)."""
    if not settings.redis_url:
        folder = broker_folder(settings) / "queue"
        return {q: broker.queue_depth(folder, q) for q in QUEUES}
    if client is None:
        return dict.fromkeys(QUEUES)
    prefix = settings.redis_prefix + "celery:"
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.llen(prefix + queue)
            return dict(zip(QUEUES, (int(n) for n in pipe.execute()), strict=True))
    except Exception as exc:
        log.warning("could not read queue depths", error=str(exc))
        return dict.fromkeys(QUEUES)
