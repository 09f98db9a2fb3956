"""The brokers' transports (api/broker.py) with real kombu connections: the embedded one on a
real folder, the Redis one on the real Redis (a key prefix of its own).

What a user relies on: a message is delivered whole or not at all, and a torn, empty or
foreign message never stops the consumer (before, one empty file in the queue folder
stopped the worker for good: "Unrecoverable error: JSONDecodeError", kombu issue #1551).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from api import broker
from tests.conftest import REDIS_URL

MALFORMED = [
    b"",  # created, not yet written: what kombu's own writer exposes
    b'{"body": "eyJh',  # cut short
    b"[]",  # JSON, not a message
    b"null",
    json.dumps(  # an envelope whose body is not base64
        {
            "body": "!!x",
            "properties": {"delivery_tag": "t", "body_encoding": "base64", "delivery_info": {}},
            "headers": {},
        }
    ).encode(),
    b"\xff\xfe\x00garbage",  # not even UTF-8
]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for sub in ("queue", "processed", "control"):
        (tmp_path / sub).mkdir()
    return tmp_path


def _connection(folder: Path) -> Connection:
    return Connection(
        f"{broker.SCHEME}://",
        transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "polling_interval": 0.01,
        },
    )


def _queue(name: str = "analysis") -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def _publish(conn: Connection, payload: dict[str, Any], name: str = "analysis") -> None:
    with conn.Producer() as producer:
        producer.publish(
            payload, exchange=name, routing_key=name, declare=[_queue(name)], serializer="json"
        )


def _consume(conn: Connection, name: str = "analysis", timeout: float = 2.0) -> list[Any]:
    got: list[Any] = []
    with conn.Consumer([_queue(name)], callbacks=[lambda body, msg: (got.append(body), msg.ack())]):
        try:
            while True:
                conn.drain_events(timeout=timeout)
        except TimeoutError:
            pass
    return got


def test_messages_go_through_whole_and_in_order(folder: Path) -> None:
    with _connection(folder) as conn:
        for i in range(5):
            _publish(conn, {"n": i})
        assert _consume(conn, timeout=0.5) == [{"n": i} for i in range(5)]
    assert list((folder / "queue").iterdir()) == []
    assert list((folder / "processing").iterdir()) == []  # taken, read, then deleted


def test_a_message_being_written_is_invisible_to_consumers(folder: Path) -> None:
    """A writer's half-written file carries a name no consumer matches until it is renamed."""
    part = folder / "queue" / f"{broker.PART_PREFIX}1_x.analysis.msg.abc.part"
    part.write_bytes(b'{"body": ')
    with _connection(folder) as conn:
        assert _consume(conn, timeout=0.3) == []
    assert part.exists()  # left to its writer


def test_malformed_messages_are_set_aside_and_the_consumer_goes_on(folder: Path) -> None:
    queue_dir = folder / "queue"
    for i, raw in enumerate(MALFORMED):
        (queue_dir / f"000000000{i}_{uuid.uuid4()}.analysis.msg").write_bytes(raw)
    (queue_dir / "0000000009_dir.analysis.msg").mkdir()  # not even a file
    with _connection(folder) as conn:
        _publish(conn, {"after": "the bad ones"})
        assert _consume(conn, timeout=0.5) == [{"after": "the bad ones"}]
    kept = sorted(p.name for p in (folder / "corrupt").iterdir())
    assert len(kept) == len(MALFORMED) + 1  # each kept for a look, none lost silently
    assert list(queue_dir.iterdir()) == []


def test_a_torn_exchange_table_is_rewritten_not_fatal(folder: Path) -> None:
    """kombu's own writer could also leave an empty exchange table behind."""
    (folder / "control" / "analysis.exchange").write_bytes(b"")
    with _connection(folder) as conn:
        _publish(conn, {"ok": True})
        assert _consume(conn, timeout=0.5) == [{"ok": True}]
    table = json.loads((folder / "control" / "analysis.exchange").read_text())
    assert table == [["analysis", "", "analysis"]]


def test_queue_depth_counts_only_that_queues_whole_messages(folder: Path) -> None:
    with _connection(folder) as conn:
        _publish(conn, {"a": 1})
        _publish(conn, {"a": 2})
        _publish(conn, {"d": 1}, name="datasets")
    (folder / "queue" / f"{broker.PART_PREFIX}x.analysis.msg.1.part").write_bytes(b"")
    assert broker.queue_depth(folder / "queue", "analysis") == 2
    assert broker.queue_depth(folder / "queue", "datasets") == 1
    assert broker.queue_depth(folder / "missing", "analysis") == 0


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"quarry-test-broker-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def test_redis_entries_that_are_not_messages_are_skipped(redis_prefix: str) -> None:
    """`redis://` resolves to Quarry's Redis transport once api.broker is imported."""
    options = {"global_keyprefix": redis_prefix}
    with Connection(REDIS_URL, transport_options=options) as conn:
        assert isinstance(conn.transport, broker.RedisTransport)
        _publish(conn, {"first": True})  # declares the queue and its binding
        client = redis.Redis.from_url(REDIS_URL)
        for raw in MALFORMED:
            client.lpush(f"{redis_prefix}analysis", raw)
        client.close()
        _publish(conn, {"last": True})
        assert _consume(conn, timeout=1.0) == [{"first": True}, {"last": True}]
