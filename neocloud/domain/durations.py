"""A duration histogram the services fill as they work and the Prometheus collectors
read at scrape time: cumulative bucket counts and a sum, as the exposition needs them.
Plain Python (no prometheus_client) so any layer may keep one in its stats."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

# Seconds; a controller step or a commit takes milliseconds, a ledger pass over a big fleet up to minutes.
DEFAULT_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Durations:
    def __init__(self, bounds: Sequence[float] = DEFAULT_BOUNDS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must rise strictly: {bounds}")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf's own
        self._sum = 0.0
        self._lock = threading.Lock()  # observed on the service's thread, read on the scrape's

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """(upper bound as Prometheus writes it, cumulative count) per bucket, +Inf last; and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets, running = [], 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets, total
