"""A background thread that calls `tick()` every `every_s` seconds while its `with` block
runs: the run watch (worker/runs.py) and the conversion heartbeat (worker/datasets.py)."""

from __future__ import annotations

import threading
from typing import Self


class Ticker:
    name = "quarry-ticker"

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError
