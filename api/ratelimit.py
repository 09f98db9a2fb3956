"""Fixed-window counters for throttling (failed sign-ins, registrations).

Redis when `REDIS_URL` is set, so that every API replica sees the same counts; an
in-process table otherwise (embedded mode, one API process). If Redis stops answering the
limiter falls back to the in-process table rather than locking everybody out or letting
everybody through unchecked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from api.logs import get_logger

log = get_logger("quarry.ratelimit")


class Counter(Protocol):
    def hit(self, key: str, window_s: int) -> int:
        """Count one event; return the count in the current window."""
        ...

    def retry_after(self, key: str, limit: int) -> int | None:
        """Seconds until `key` may act again if it reached `limit`; None if it may now."""
        ...

    def reset(self, key: str) -> None: ...


class MemoryCounter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, float]] = {}

    def hit(self, key: str, window_s: int) -> int:
        now = self._clock()
        with self._lock:
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
            count, expires = self._windows.get(key, (0, 0.0))
            if expires <= now:
                count, expires = 0, now + window_s
            self._windows[key] = (count + 1, expires)
            return count + 1

    def retry_after(self, key: str, limit: int) -> int | None:
        now = self._clock()
        with self._lock:
            count, expires = self._windows.get(key, (0, 0.0))
        if expires > now and count >= limit:
            return max(1, int(expires - now + 0.999))
        return None

    def reset(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)


class RedisCounter:
    def __init__(self, client: redis.Redis, prefix: str, fallback: MemoryCounter) -> None:
        self._redis = client
        self._prefix = prefix
        self._fallback = fallback

    def hit(self, key: str, window_s: int) -> int:
        full = self._prefix + key
        try:
            pipe = self._redis.pipeline()
            pipe.incr(full)
            pipe.expire(full, window_s, nx=True)
            count, _ = pipe.execute()
            return int(count)
        except redis.RedisError as exc:
            log.warning("rate limit store unavailable, counting in process", error=str(exc))
            return self._fallback.hit(key, window_s)

    def retry_after(self, key: str, limit: int) -> int | None:
        full = self._prefix + key
        try:
            pipe = self._redis.pipeline()
            pipe.get(full)
            pipe.ttl(full)
            count, ttl = pipe.execute()
        except redis.RedisError as exc:
            log.warning("rate limit store unavailable, counting in process", error=str(exc))
            return self._fallback.retry_after(key, limit)
        if count is not None and int(count) >= limit:
            return max(1, int(ttl)) if ttl and ttl > 0 else 1
        return None

    def reset(self, key: str) -> None:
        try:
            self._redis.delete(self._prefix + key)
        except redis.RedisError:
            self._fallback.reset(key)
