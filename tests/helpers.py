"""Helpers shared by the test packages."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

TRACES = Path(__file__).resolve().parent / "data"
H200_TRACE = TRACES / "h200-two-procs.jsonl"


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll a condition the code under test reaches asynchronously."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def integrate_mj(points: list[tuple[int, int]], t0_us: int, t1_us: int) -> float:
    """Trapezoid over (µs, mW) points between t0 and t1, interpolating at the ends."""
    pts = sorted(points)

    def at(t: int) -> float:
        if t <= pts[0][0]:
            return pts[0][1]
        for (ta, pa), (tb, pb) in itertools.pairwise(pts):
            if ta <= t <= tb:
                return pa + (pb - pa) * (t - ta) / (tb - ta) if tb > ta else pa
        return pts[-1][1]

    seq = [(t0_us, at(t0_us)), *((t, float(p)) for t, p in pts if t0_us < t < t1_us), (t1_us, at(t1_us))]
    return sum((tb - ta) / 1e6 * (pa + pb) / 2 for (ta, pa), (tb, pb) in itertools.pairwise(seq))
