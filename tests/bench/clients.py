"""Simulated clients for the load and soak benchmarks (asyncio + httpx2), and the small
statistics and log-reading helpers their reports share.

A `Client` is one person's browser: its own connections, signed in as one user. `follow`
reads a run's Server-Sent Events as a browser's EventSource does: on a broken stream it
waits the `retry:` the server asked for and resumes with `Last-Event-ID`, until `done`
or a deadline. Every failure is counted by kind in `Errors` (with the first messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import re
import ssl
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

PASSWORD = "correct horse battery staple"
RETRY_S = 2.0  # what the API's streams ask for (`retry: 2000`)


# --- statistics --------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def dist(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p95": round(pct(values, 95), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}"


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


# --- errors ------------------------------------------------------------------------------------


class Errors:
    """Failures by kind, with the first few messages of each."""

    def __init__(self, samples: int = 3) -> None:
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, list[str]] = defaultdict(list)
        self.keep = samples

    def add(self, kind: str, message: str = "") -> None:
        self.counts[kind] += 1
        if len(self.samples[kind]) < self.keep:
            self.samples[kind].append(" ".join(str(message).split())[:300])

    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            kind: {"count": n, "first": self.samples.get(kind, [])}
            for kind, n in self.counts.most_common()
        }

    def print(self, title: str, indent: str = "  ") -> None:
        print(f"{indent}{title}: {self.total()}" + ("" if self.counts else " (none)"))
        for kind, n in self.counts.most_common():
            print(f"{indent}  {n:>7}  {kind}")
            for sample in self.samples.get(kind, []):
                print(f"{indent}           e.g. {sample[:160]}")


# --- one browser -------------------------------------------------------------------------------


class Balancer:
    """Round robin over the API replicas, per request (as a load balancer spreads them)."""

    def __init__(self, bases: Sequence[str]) -> None:
        self.bases = list(bases)
        self._next = itertools.cycle(range(len(self.bases)))

    def pick(self) -> tuple[int, str]:
        i = next(self._next)
        return i, self.bases[i]


@dataclass
class Follow:
    """A run as one stream reader saw it (times in seconds from the 202)."""

    opened_s: float | None = None  # the first stream answered 200
    first_s: float | None = None
    first_type: str = ""
    done_s: float | None = None
    status: str = ""  # the done event's status, or timeout / stopped
    error: str = ""  # the run's error event, if any
    reconnects: int = 0
    events: int = 0


@dataclass
class Streams:
    """Open event streams right now, by who holds them."""

    open: Counter[str] = field(default_factory=Counter)
    opened: Counter[str] = field(default_factory=Counter)


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


class Client:
    """One browser, signed in as one user, with connections of its own."""

    def __init__(
        self,
        balancer: Balancer,
        errors: Errors,
        streams: Streams,
        *,
        read_timeout_s: float = 45.0,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.balancer = balancer
        self.errors = errors
        self.streams = streams
        self.read_timeout_s = read_timeout_s
        self.http = httpx.AsyncClient(
            # one TLS context for all (loopback HTTP needs none; building one per client
            # loads the CA bundle: ~30 ms of the event loop each)
            verify=_tls(),
            timeout=httpx.Timeout(request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=4),
        )
        self._headers: dict[str, str] = {}
        self.refresh_token = ""
        self.owner: Client | None = None  # another tab of that user: it renews the tokens
        self.email = ""
        self.renewals = 0
        self._renewing = asyncio.Lock()

    @property
    def headers(self) -> dict[str, str]:
        return dict((self.owner or self)._headers)

    async def aclose(self) -> None:
        await self.http.aclose()

    def signed_in_as(self, other: Client) -> Client:
        """Another tab of `other`'s user: same tokens, renewed by `other`."""
        self.owner, self.email = other.owner or other, other.email
        return self

    async def renew(self, stale: dict[str, str]) -> bool:
        """After a 401: a new token pair from the refresh token, as the UI does when an
        access token expires (ACCESS_TOKEN_TTL_MINUTES). False when it cannot."""
        me = self.owner or self
        async with me._renewing:
            if me._headers.get("Authorization") != stale.get("Authorization"):
                return True  # another request of this user renewed them meanwhile
            if not me.refresh_token:
                return False
            _, base = self.balancer.pick()
            try:
                response = await me.http.post(
                    base + "/api/auth/refresh", json={"refresh_token": me.refresh_token}
                )
            except httpx.HTTPError as exc:
                self.errors.add(f"refresh: {type(exc).__name__}", str(exc))
                return False
            if response.status_code != 200:
                self.errors.add(f"refresh: HTTP {response.status_code}", response.text[:300])
                return False
            me._sign_in(response.json())
            me.renewals += 1
            return True

    def _sign_in(self, pair: dict[str, Any]) -> None:
        self._headers = {"Authorization": f"Bearer {pair['access_token']}"}
        self.refresh_token = str(pair.get("refresh_token") or "")

    async def request(
        self, what: str, method: str, path: str, expect: int | tuple[int, ...], **kwargs: Any
    ) -> httpx.Response | None:
        """One request to the next replica; None (and an error counted) unless `expect`."""
        expected = (expect,) if isinstance(expect, int) else expect
        for attempt in (1, 2):
            _, base = self.balancer.pick()
            headers = self.headers
            try:
                response = await self.http.request(method, base + path, headers=headers, **kwargs)
            except httpx.TimeoutException as exc:
                self.errors.add(f"{what}: {type(exc).__name__}", f"{method} {path}")
                return None
            except httpx.HTTPError as exc:
                self.errors.add(f"{what}: {type(exc).__name__}", f"{method} {path}: {exc}")
                return None
            if response.status_code != 401 or attempt == 2 or not await self.renew(headers):
                break
        if response.status_code not in expected:
            self.errors.add(f"{what}: HTTP {response.status_code}", response.text[:300])
            return None
        return response

    async def sign_up(self, email: str) -> bool:
        self.email = email
        body = {"email": email, "password": PASSWORD}
        if await self.request("register", "POST", "/api/auth/register", 201, json=body) is None:
            return False
        login = await self.request("login", "POST", "/api/auth/login", 200, json=body)
        if login is None:
            return False
        self._sign_in(login.json())
        return True

    async def upload(
        self, name: str, content: bytes, timeout_s: float = 300.0
    ) -> tuple[str | None, float]:
        """A CSV upload, waited to `ready`: (dataset id or None, seconds)."""
        started = time.monotonic()
        files = {"file": (name, content, "text/csv")}
        response = await self.request("upload", "POST", "/api/datasets", 202, files=files)
        if response is None:
            return None, time.monotonic() - started
        dataset_id = str(response.json()["data"][0]["id"])
        delay = 0.2
        while time.monotonic() - started < timeout_s:
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 1.5)
            got = await self.request("dataset status", "GET", f"/api/datasets/{dataset_id}", 200)
            if got is None:
                continue
            status = got.json()["status"]
            if status == "ready":
                return dataset_id, time.monotonic() - started
            if status != "processing":
                self.errors.add(f"upload: dataset {status}", str(got.json().get("error")))
                return None, time.monotonic() - started
        self.errors.add("upload: not ready in time", f"{dataset_id} after {timeout_s:.0f} s")
        return None, time.monotonic() - started

    async def session(self, dataset_id: str, title: str) -> str | None:
        body = {"title": title, "dataset_ids": [dataset_id]}
        response = await self.request("create session", "POST", "/api/sessions", 201, json=body)
        return None if response is None else str(response.json()["id"])

    async def follow(
        self, run_id: str, accepted: float, deadline: float, who: str, stop: asyncio.Event
    ) -> Follow:
        """Read the run's events until `done` (resuming broken streams), the deadline, or
        `stop`. Times are from `accepted` (monotonic)."""
        f = Follow()
        last_id: int | None = None
        while True:
            if time.monotonic() >= deadline:
                f.status = "timeout"
                self.errors.add(f"{who} stream: no done before the deadline", run_id)
                return f
            if stop.is_set():
                f.status = "stopped"
                return f
            _, base = self.balancer.pick()
            headers = self.headers
            signed = dict(headers)
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            opened = False
            try:
                async with self.http.stream(
                    "GET",
                    f"{base}/api/runs/{run_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=self.read_timeout_s),
                ) as response:
                    if response.status_code == 401 and await self.renew(signed):
                        continue  # an expired access token, renewed: open it again
                    if response.status_code != 200:
                        body = (await response.aread())[:300].decode("utf-8", "replace")
                        self.errors.add(f"{who} stream: HTTP {response.status_code}", body)
                    else:
                        opened = True
                        self.streams.open[who] += 1
                        self.streams.opened[who] += 1
                        if f.opened_s is None:
                            f.opened_s = time.monotonic() - accepted
                        data: list[str] = []
                        ended = False
                        async for line in response.aiter_lines():
                            if line.startswith("data:"):
                                data.append(line[5:].lstrip())
                                continue
                            if line or not data:
                                continue
                            event = json.loads("\n".join(data))
                            data = []
                            now = time.monotonic() - accepted
                            f.events += 1
                            kind = str(event.get("type"))
                            if f.first_s is None:
                                f.first_s, f.first_type = now, kind
                            if kind != "notice" and isinstance(event.get("seq"), int):
                                last_id = event["seq"]
                            payload = event.get("payload") or {}
                            if kind == "error" and not f.error:
                                f.error = str(payload.get("message", ""))
                            if kind == "done":
                                f.done_s, f.status = now, str(payload.get("status", "?"))
                                return f
                            if time.monotonic() >= deadline or stop.is_set():
                                ended = True
                                break
                        if not ended:
                            self.errors.add(f"{who} stream: closed before done", run_id)
            except httpx.TimeoutException as exc:
                self.errors.add(f"{who} stream: {type(exc).__name__}", run_id)
            except httpx.HTTPError as exc:
                self.errors.add(f"{who} stream: {type(exc).__name__}", f"{run_id}: {exc}")
            except ValueError as exc:  # a malformed event
                self.errors.add(f"{who} stream: bad event", str(exc))
            finally:
                if opened:
                    self.streams.open[who] -= 1
            f.reconnects += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_S)


# --- logs --------------------------------------------------------------------------------------

CRASH_MARKERS = (
    "Unrecoverable error",
    "Traceback (most recent call last)",
    "WorkerLostError",
    "Process 'ForkPoolWorker",
    "too many clients",
    "QueuePool limit",
    "sandbox uid blocks",
    "MemoryError",
    "Killed",
)


def scan_log(path: Path, markers: Sequence[str] = CRASH_MARKERS) -> dict[str, Any]:
    """Counts in one log: lines with each marker, and JSON lines at error level or above
    by their event (the first words)."""
    found: Counter[str] = Counter()
    events: Counter[str] = Counter()
    first: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"markers": {}, "errors": {}, "first": {}}
    for line in text.splitlines():
        for marker in markers:
            if marker in line:
                found[marker] += 1
                first.setdefault(marker, line[:300])
        if '"level":"error"' in line or '"level":"critical"' in line:
            try:
                event = str(json.loads(line).get("event", ""))
            except ValueError:
                event = line
            key = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", event)[:90]
            events[key] += 1
            first.setdefault(key, line[:300])
    return {"markers": dict(found), "errors": dict(events.most_common(12)), "first": first}
