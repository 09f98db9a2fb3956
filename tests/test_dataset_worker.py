"""Dataset conversion through the real `datasets` queue: the API (in-process) stores the
upload and sends `worker.tasks.convert_upload`; real Celery worker processes convert it
(the Stack of tests/test_agent_integration.py: real PostgreSQL, real Redis). A stopped API
does not stop a conversion; a killed worker's conversion is retried by the reaper; a lost
message is sent again; whatever happens, no dataset stays `processing`.

Other tests convert uploads in-process (tests/conftest.py, InProcessDatasetQueue); tests
that use `stack_factory` get the real queue.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.db import utcnow
from api.models import Dataset
from api.storage import remove_tree, staging_dir
from tests.factories import CENSUS_CSV, User
from tests.integration.test_datasets import slow_xlsx
from tests.test_agent_integration import Stack, stack_factory  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

# The first rows (all the request's sniffer reads) are fine; 1500 later rows are short: the
# converter, in the worker, finds out.
BAD_CSV = b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(300)) + b"7\n" * 1500
BAD_CSV_ERROR = (
    "More than 1000 rows have the wrong number of fields (Row #1302: Expected 2 columns, got 1: 7)"
)


def row(engine: Engine, dataset_id: str) -> Dataset:
    with Session(engine, expire_on_commit=False) as db:
        found = db.get(Dataset, uuid.UUID(dataset_id))
    assert found is not None
    return found


def wait_for(stack: Stack, condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            errors = b"".join(p.stderr.read1() if p.stderr else b"" for p in stack.workers)
            raise AssertionError(f"{what}: not in {timeout} s; workers said {errors[-3000:]!r}")
        time.sleep(0.1)


def wait_settled(stack: Stack, user: User, dataset_id: str, timeout: float = 90) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def settled() -> bool:
        response = stack.client.get(f"/api/datasets/{dataset_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        found.update(response.json())
        return found["status"] != "processing"

    wait_for(stack, settled, f"dataset {dataset_id} settled", timeout)
    return found


def converters_under(folder: Path) -> list[int]:
    """Converter processes working in an upload folder under `folder` (their cwd)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(folder.resolve())):
                found.append(int(entry.name))
    return found


def upload(stack: Stack, user: User, content: bytes, filename: str) -> str:
    [dataset] = stack.client.upload(user, content, filename)["data"]
    assert dataset["status"] == "processing"
    return str(dataset["id"])


def test_uploads_go_through_the_datasets_queue_to_a_worker(
    stack_factory: Any,  # noqa: F811
    pg_engine: Engine,
) -> None:
    stack: Stack = stack_factory()
    client = stack.start_api()
    user = client.user()
    good = upload(stack, user, CENSUS_CSV, "census.csv")
    bad = upload(stack, user, BAD_CSV, "bad.csv")

    # The API converts nothing itself: the messages wait on the datasets queue.
    broker = redis.Redis.from_url(stack.redis_url)
    assert broker.llen(f"{stack.prefix}celery:datasets") == 2
    broker.close()
    time.sleep(1)
    assert client.get(f"/api/datasets/{good}", headers=user.headers).json()["status"] == (
        "processing"
    )

    stack.start_worker()
    ready = wait_settled(stack, user, good)
    failed = wait_settled(stack, user, bad)

    assert (ready["status"], ready["row_count"], ready["column_count"]) == ("ready", 8, 4)
    assert failed["status"] == "failed"
    assert failed["error"] == BAD_CSV_ERROR
    assert row(pg_engine, good).attempts == 1
    wait_for(stack, lambda: not list((stack.data_dir / "uploads").iterdir()), "staging gone")
    preview = client.get(f"/api/datasets/{good}/preview?limit=2", headers=user.headers)
    assert preview.status_code == 200
    assert preview.json()["rows"][0] == {
        "age": 25,
        "income": 30000,
        "education": "HS",
        "workclass": "Private",
    }


def test_stopping_the_api_mid_conversion_does_not_stop_the_conversion(
    stack_factory: Any,  # noqa: F811
    pg_engine: Engine,
) -> None:
    """The API used to convert in-process: stopped mid-conversion, it left the dataset failed
    (or, killed, `processing` for ever). Now the worker owns the conversion."""
    stack: Stack = stack_factory()
    stack.start_worker()
    user = stack.start_api().user()
    dataset_id = upload(stack, user, slow_xlsx(60_000), "slow.xlsx")
    wait_for(stack, lambda: row(pg_engine, dataset_id).heartbeat_at is not None, "claimed")

    stack.stop_api()
    stack.start_api()

    done = wait_settled(stack, user, dataset_id)
    assert (done["status"], done["row_count"]) == ("ready", 60_000)


def test_a_worker_killed_mid_conversion_is_replaced_through_the_reaper(
    stack_factory: Any,  # noqa: F811
    pg_engine: Engine,
) -> None:
    stack: Stack = stack_factory(run_stale_after_s=4, reaper_interval_s=0.5)
    stack.start_worker(beat=True)
    user = stack.start_api().user()
    dataset_id = upload(stack, user, slow_xlsx(150_000), "slow.xlsx")
    wait_for(stack, lambda: bool(converters_under(stack.data_dir)), "converting")

    stack.kill_workers()  # SIGKILL: no ack, no clean-up, no more heartbeats
    # Its converter does not outlive it (it would race the retry for the same files).
    wait_for(stack, lambda: not converters_under(stack.data_dir), "converter gone", 5)
    assert row(pg_engine, dataset_id).status == "processing"
    stack.start_worker(beat=True)

    done = wait_settled(stack, user, dataset_id, timeout=120)
    assert (done["status"], done["row_count"]) == ("ready", 150_000)
    stored = row(pg_engine, dataset_id)
    assert stored.attempts >= 2
    assert stored.requeues >= 1


def test_lost_messages_are_sent_again_and_no_dataset_stays_processing(
    stack_factory: Any,  # noqa: F811
    pg_engine: Engine,
) -> None:
    stack: Stack = stack_factory(dataset_queued_timeout_s=30, reaper_interval_s=0.5)
    client = stack.start_api()
    user = client.user()
    good = upload(stack, user, CENSUS_CSV, "census.csv")
    bad = upload(stack, user, BAD_CSV, "bad.csv")
    gone = upload(stack, user, b"a,b\n1,2\n", "small.csv")
    # Redis lost every message (flushed, failed over), and one upload lost its file too.
    broker = redis.Redis.from_url(stack.redis_url)
    for key in broker.scan_iter(f"{stack.prefix}*"):
        broker.delete(key)
    assert broker.llen(f"{stack.prefix}celery:datasets") == 0
    broker.close()
    with Session(pg_engine) as db:
        upload_id = db.scalar(select(Dataset.upload_id).where(Dataset.id == uuid.UUID(gone)))
        assert upload_id is not None
        remove_tree(staging_dir(stack.data_dir, upload_id))
        # ... long enough ago for the reaper (instead of waiting RUN_QUEUED_TIMEOUT_S)
        ids = [uuid.UUID(d) for d in (good, bad, gone)]
        db.execute(
            update(Dataset)
            .where(Dataset.id.in_(ids))
            .values(enqueued_at=utcnow() - timedelta(seconds=60))
        )
        db.commit()

    stack.start_worker(beat=True)

    ready = wait_settled(stack, user, good)
    failed = wait_settled(stack, user, bad)
    missing = wait_settled(stack, user, gone)
    assert ready["status"] == "ready"
    assert failed["status"] == "failed"
    assert failed["error"] == BAD_CSV_ERROR
    assert (missing["status"], missing["error"]) == (
        "failed",
        "Quarry no longer has the uploaded file to convert; upload it again.",
    )
    for dataset_id in (good, bad, gone):
        stored = row(pg_engine, dataset_id)
        assert (stored.requeues, stored.attempts) == (1, 1)
    wait_for(stack, lambda: not list((stack.data_dir / "uploads").iterdir()), "staging gone")


def test_an_upload_with_no_worker_says_so_and_a_lost_message_costs_seconds(
    stack_factory: Any,  # noqa: F811
    pg_engine: Engine,
) -> None:
    """Uploaded while no worker runs: the dataset says why it is not converting. Then Redis
    loses the message (flushed); a worker starts: the reaper sees the `datasets` queue
    empty and the upload unclaimed, and sends it again within seconds (before: after
    DATASET_QUEUED_TIMEOUT_S, an hour)."""
    stack: Stack = stack_factory(run_claim_timeout_s=2, reaper_interval_s=0.5)
    client = stack.start_api()
    user = client.user()
    dataset_id = upload(stack, user, CENSUS_CSV, "census.csv")

    found: dict[str, Any] = {}

    def told() -> bool:
        found.update(client.get(f"/api/datasets/{dataset_id}", headers=user.headers).json())
        return bool(found["waiting"])

    wait_for(stack, told, "the dataset says no worker converts it", timeout=30)
    assert found["status"] == "processing"
    assert "No worker is converting uploads" in found["waiting"]
    listed = client.get("/api/datasets", headers=user.headers).json()["data"]
    assert listed[0]["waiting"] == found["waiting"]

    broker = redis.Redis.from_url(stack.redis_url)
    for key in broker.scan_iter(f"{stack.prefix}*"):
        broker.delete(key)
    broker.close()
    started = time.monotonic()
    stack.start_worker(beat=True)
    ready = wait_settled(stack, user, dataset_id, timeout=60)
    assert ready["status"] == "ready", ready["error"]
    assert ready["waiting"] is None
    print(f"converted {time.monotonic() - started:.1f} s after a worker started")
    stored = row(pg_engine, dataset_id)
    assert (stored.requeues, stored.attempts) == (1, 1)  # sent again once, converted once
