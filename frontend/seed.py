"""`make demo`'s welcome: a demo account and a sample dataset, created through the API.

    python -m frontend.seed   # waits for the API (QUARRY_API_URL), then prints how to sign in

Idempotent: an existing account is reused, and the sample is uploaded only once.
"""

from __future__ import annotations

import csv
import io
import os
import random
import sys
import time
from datetime import date, timedelta

from frontend.client import APIError, QuarryClient

EMAIL = os.environ.get("QUARRY_DEMO_EMAIL", "demo@example.com")
PASSWORD = os.environ.get("QUARRY_DEMO_PASSWORD", "try quarry locally")
SAMPLE = "sample_sales.csv"


def sample_csv(rows: int = 600) -> bytes:
    """Daily sales of a small shop: dates, categories, numbers (fixed seed)."""
    rng = random.Random(7)  # noqa: S311 - sample data, not secrets
    regions = {"North": 1.2, "South": 0.9, "East": 1.0, "West": 1.1}
    products = {"Tea": 4.5, "Coffee": 6.0, "Cake": 3.2, "Sandwich": 7.5}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date", "region", "product", "units", "unit_price", "revenue", "rating"])
    start = date(2026, 1, 1)
    for i in range(rows):
        day = start + timedelta(days=i // 4)
        region = rng.choice(list(regions))
        product = rng.choice(list(products))
        units = max(1, int(rng.gauss(20, 6) * regions[region] * (1 + (i // 4) / 400)))
        price = products[product]
        rating = round(min(5.0, max(1.0, rng.gauss(4.1, 0.6))), 1)
        writer.writerow([day.isoformat(), region, product, units, price, units * price, rating])
    return out.getvalue().encode()


def wait_for_api(client: QuarryClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.request("GET", "/healthz")
            return
        except APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> int:
    client = QuarryClient()
    try:
        wait_for_api(client)
        try:
            client.register(EMAIL, PASSWORD, "Demo user")
        except APIError as exc:
            if exc.status != 409:  # 409: the account exists already
                raise
        client.login(EMAIL, PASSWORD)
        if not any(d["original_filename"] == SAMPLE for d in client.datasets()):
            client.upload(SAMPLE, sample_csv(), "Sample sales")
    except APIError as exc:
        print(f"demo: could not prepare the demo account: {exc.message}", file=sys.stderr)
        return 1
    print(f"  demo account: {EMAIL} / {PASSWORD} (with a sample dataset, 'Sample sales')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
