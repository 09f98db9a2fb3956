"""API benchmark: `make bench-api`.

Starts the real API (uvicorn, PostgreSQL on this machine), drives it with `wrk` from another
process on loopback, and prints requests/s and latency percentiles for the authenticated
single-session read and the 50-item session page; then uploads a large CSV and reports the
time until the dataset is ready and how much the API process grew meanwhile.

    python -m tests.bench.bench_api [--duration 15] [--connections 32] [--workers 2]
                                    [--csv-mb 500] [--skip-ingest] [--skip-http]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("report.lua")
PASSWORD = "correct horse battery staple"
SMALL_CSV = b"region,price\nnorth,10\nsouth,12\neast,9\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def api_server(
    database_url: str, data_dir: Path, workers: int, log: Path
) -> Iterator[tuple[str, int]]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        "LOG_JSON": "true",
        "REGISTER_MAX_PER_IP_PER_HOUR": "100000",
        "MAX_UPLOAD_MB": "1024",
        "DB_POOL_SIZE": "20",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the API did not start; see {log}")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _signed_in(http: httpx.Client, prefix: str) -> str:
    """A new account's access token."""
    email = f"{prefix}-{secrets.token_hex(4)}@example.com"
    http.post("/api/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
    login = http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    return str(login.json()["access_token"])


def _seed(base: str) -> dict[str, str]:
    with httpx.Client(base_url=base, timeout=60) as http:
        token = _signed_in(http, "bench")
        headers = {"Authorization": f"Bearer {token}"}
        upload = http.post(
            "/api/datasets", headers=headers, files={"file": ("prices.csv", SMALL_CSV)}
        ).json()
        dataset_id = upload["data"][0]["id"]
        while (
            http.get(f"/api/datasets/{dataset_id}", headers=headers).json()["status"]
            == "processing"
        ):
            time.sleep(0.1)
        session_ids = [
            http.post(
                "/api/sessions",
                headers=headers,
                json={"title": f"Session {i}", "dataset_ids": [dataset_id]},
            ).json()["id"]
            for i in range(60)
        ]
    return {"token": token, "session_id": session_ids[0]}


def _wrk(url: str, token: str, duration: int, connections: int) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{duration}s",
        "-s",
        str(LUA),
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("{"))
    return dict(json.loads(line))


def bench_http(base: str, duration: int, connections: int) -> list[dict[str, Any]]:
    seeded = _seed(base)
    targets = [
        ("GET /api/sessions/{id}", f"{base}/api/sessions/{seeded['session_id']}", 2000, 25),
        ("GET /api/sessions?limit=50", f"{base}/api/sessions?limit=50", 800, 60),
    ]
    rows = []
    for name, url, rps_target, p95_target in targets:
        _wrk(url, seeded["token"], 3, connections)  # warm-up: pools, caches, JIT-less Python
        result = _wrk(url, seeded["token"], duration, connections)
        result.update(name=name, target=f">= {rps_target} req/s, p95 <= {p95_target} ms")
        result["meets_target"] = result["rps"] >= rps_target and result["p95_ms"] <= p95_target
        rows.append(result)
    return rows


# --- ingest ------------------------------------------------------------------------------------


def make_csv(path: Path, megabytes: int) -> int:
    """A realistic wide-ish CSV (ids, timestamps, categories, amounts, free text)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(7)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
    ]
    phrases = np.array([" ".join(rng.choice(words, 4)) for _ in range(5000)])
    regions = np.array(["north", "south", "east", "west", "centre"])
    written, start, batch_rows = 0, 0, 200_000
    with pacsv.CSVWriter(str(path), _schema()) as writer:
        while written < megabytes * 1_000_000:
            ids = np.arange(start, start + batch_rows)
            batch = pa.record_batch(
                [
                    pa.array(ids),
                    pa.array(
                        np.datetime64("2024-01-01T00:00:00")
                        + rng.integers(0, 3e7, batch_rows).astype("timedelta64[s]")
                    ),
                    pa.array(regions[rng.integers(0, 5, batch_rows)]),
                    pa.array(rng.normal(100, 25, batch_rows).round(2)),
                    pa.array(rng.integers(1, 50, batch_rows)),
                    pa.array(rng.random(batch_rows) < 0.3),
                    pa.array(phrases[rng.integers(0, len(phrases), batch_rows)]),
                ],
                schema=_schema(),
            )
            writer.write_batch(batch)
            start += batch_rows
            written = path.stat().st_size
    return start


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("order_id", pa.int64()),
            ("ordered_at", pa.timestamp("s")),
            ("region", pa.string()),
            ("amount", pa.float64()),
            ("quantity", pa.int64()),
            ("express", pa.bool_()),
            ("note", pa.string()),
        ]
    )


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def bench_ingest(base: str, pid: int, csv_path: Path, rows: int) -> dict[str, Any]:
    with httpx.Client(base_url=base, timeout=600) as http:
        headers = {"Authorization": f"Bearer {_signed_in(http, 'ingest')}"}
        baseline = _rss_kb(pid)
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        peak = [baseline]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_kb(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        with open(csv_path, "rb") as fh:
            response = http.post(
                "/api/datasets", headers=headers, files={"file": ("orders.csv", fh, "text/csv")}
            )
        uploaded = time.perf_counter() - started
        response.raise_for_status()
        dataset_id = response.json()["data"][0]["id"]
        while True:
            dataset = http.get(f"/api/datasets/{dataset_id}", headers=headers).json()
            if dataset["status"] != "processing":
                break
            time.sleep(0.05)
        ready = time.perf_counter() - started
        stop.set()
        sampler.join()
    hwm = max(_rss_kb(pid, "VmHWM"), peak[0])
    ingest = (dataset.get("profile") or {}).get("ingest", {})
    return {
        "name": f"ingest {csv_path.stat().st_size / 1e6:.0f} MB CSV",
        "status": dataset["status"],
        "error": dataset.get("error"),
        "rows": dataset.get("row_count"),
        "rows_expected": rows,
        "upload_s": round(uploaded, 2),
        "ready_s": round(ready, 2),
        "api_growth_mb": round((hwm - baseline) / 1024, 1),
        "converter_peak_rss_mb": ingest.get("peak_rss_mb"),
        "target": "ready <= 15 s, API growth <= 300 MB",
        "meets_target": dataset["status"] == "ready"
        and ready <= 15
        and (hwm - baseline) / 1024 <= 300,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (API replicas)")
    parser.add_argument("--csv-mb", type=int, default=500)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    if not args.skip_http and shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    results: list[dict[str, Any]] = []
    url = create_database("quarry_bench")
    work = Path(tempfile.mkdtemp(prefix="quarry-bench-"))
    log = work / "api.log"
    try:
        subprocess.run(
            [sys.executable, "-m", "api.prestart"],
            check=True,
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
        )
        if not args.skip_http:
            with api_server(url, work / "data", args.workers, log) as (base, _pid):
                results += bench_http(base, args.duration, args.connections)
        if not args.skip_ingest:
            csv_path = work / "orders.csv"
            t0 = time.perf_counter()
            rows = make_csv(csv_path, args.csv_mb)
            print(
                f"generated {csv_path.stat().st_size / 1e6:.0f} MB CSV ({rows} rows) "
                f"in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
            with api_server(url, work / "data", 1, log) as (base, pid):
                results.append(bench_ingest(base, pid, csv_path, rows))
    finally:
        drop_database(url)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nQuarry API benchmark — {os.cpu_count()} CPUs, wrk -c{args.connections}, "
        f"{args.workers} uvicorn workers, PostgreSQL on this machine"
    )
    for row in results:
        print(json.dumps(row))
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "api.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
