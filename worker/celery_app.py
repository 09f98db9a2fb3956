"""The Celery app: `celery -A worker.celery_app worker -Q analysis,datasets,maintenance`.

Redis is the broker when REDIS_URL is set; embedded mode uses kombu's filesystem transport
under DATA_DIR (api/queue.py), so `make demo` needs nothing but Python. JSON only; run state
lives in the database, not in a result backend. Messages are acknowledged late and runs are
idempotent by id (a redelivered message finds its run claimed and does nothing); a run
whose worker vanished is re-queued once or failed by the reaper (`reap_runs`, every
REAPER_INTERVAL_S through beat: start one worker with `--beat`, or a separate
`celery -A worker.celery_app beat`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any


def _is_worker_process() -> bool:
    """`celery ... worker`, run as the script or as `python -m celery`."""
    script = sys.argv[0] if sys.argv else ""
    launcher = os.path.basename(script) == "celery" or script.endswith("celery/__main__.py")
    return launcher and "worker" in sys.argv[1:]


# Worker metrics add up the prefork children's samples (worker/metrics.py): prometheus-client
# reads this variable when it is first imported, so it is set before anything imports it.
if _is_worker_process() and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quarry-worker-metrics-")

from celery import Celery, signals  # noqa: E402

from api.config import get_settings  # noqa: E402
from api.logs import configure_logging  # noqa: E402
from api.queue import PURGE_TOKENS, REAP_DATASETS, REAP_RUNS, celery_config  # noqa: E402

settings = get_settings()
TOKEN_PURGE_INTERVAL_S = 3600.0
if _is_worker_process() or "beat" in sys.argv[1:]:
    # beat's schedule file lives there: a missing folder stopped the embedded beat at start,
    # silently, and with it every reaper
    settings.data_dir.mkdir(parents=True, exist_ok=True)

app = Celery("quarry", include=["worker.tasks"])
app.conf.update(celery_config(settings))
app.conf.update(
    worker_prefetch_multiplier=1,  # a long turn must not hold other turns hostage
    task_acks_late=True,
    task_soft_time_limit=settings.turn_time_limit_s,
    task_time_limit=settings.turn_time_limit_s + 30,
    worker_hijack_root_logger=False,  # structlog, configured below
    worker_redirect_stdouts=False,
    worker_send_task_events=False,
    broker_connection_max_retries=None,
    beat_schedule={
        "reap-runs": {
            "task": REAP_RUNS,
            "schedule": settings.reaper_interval_s,
            "options": {"queue": "maintenance", "expires": settings.reaper_interval_s},
        },
        "reap-datasets": {
            "task": REAP_DATASETS,  # worker/datasets.py: none stays processing
            "schedule": settings.reaper_interval_s,
            "options": {"queue": "maintenance", "expires": settings.reaper_interval_s},
        },
        "purge-expired-tokens": {
            "task": PURGE_TOKENS,  # api/maintenance.py: expired refresh/revoked tokens
            "schedule": TOKEN_PURGE_INTERVAL_S,
            "options": {"queue": "maintenance", "expires": TOKEN_PURGE_INTERVAL_S},
        },
    },
    beat_schedule_filename=str((settings.data_dir / "celerybeat-schedule").resolve()),
)


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    # in the parent, before the pool forks: one endpoint adding up every child's samples
    from worker import metrics

    metrics.clear_stale_files()
    metrics.serve(settings.worker_metrics_port)


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    # the main process, its consumer running: say so every WORKER_HEARTBEAT_S
    from worker import heartbeat

    heartbeat.start(settings, sender)


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    from worker import heartbeat

    heartbeat.stop()


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    # A prefork child must not share the parent's database connections or sandboxes.
    from worker.context import reset_context

    reset_context()


@signals.worker_process_shutdown.connect
def _child_shutdown(**_: Any) -> None:
    from worker import metrics
    from worker.context import close_context

    close_context()
    metrics.child_exited(os.getpid())
