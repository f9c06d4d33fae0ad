"""Log lines with counts and rates for long loops (readable in Prefect's
worker logs, where progress bars are not)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("casflow.progress")


class Progress:
    def __init__(self, what: str, total: int, unit: str = "images", every_seconds: float = 5.0):
        self.what, self.total, self.unit, self.every = what, total, unit, every_seconds
        self.done = 0
        self.started = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            log.info("%s: %d/%d %s (%.0f%%), %.0f %s/s", self.what, self.done, self.total, self.unit,
                     100 * self.done / max(self.total, 1), rate, self.unit)
