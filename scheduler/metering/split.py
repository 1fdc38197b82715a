"""Split a GPU's energy-counter deltas across allocation intervals.

Between two counter readings the delta is exact but says nothing about when
inside the span it was spent; the power samples in the span do. Each delta is
therefore divided among the pieces of the span cut at allocation boundaries,
in proportion to the power integrated over each piece (by duration when no
power was sampled). Whatever no allocation holds is idle. By construction the
pieces of each delta add up to it, so for every GPU:

    sum(energy of allocations) + energy idle == counter delta

Pure: no I/O, no clock. Times are Unix seconds, power W, energy J.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

IDLE = "idle"


@dataclass(frozen=True, slots=True)
class Interval:
    """An allocation of one GPU over [start, end)."""

    key: str  # identifies the allocation (job, tenant, class, ...) to the caller
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class CounterReading:
    t: float
    energy_j: float
    reset: bool = False  # the counter restarted before this reading


@dataclass(frozen=True, slots=True)
class GpuUsage:
    gpu_seconds: dict[str, float]  # key (or IDLE) -> seconds inside the window
    energy_j: dict[str, float]  # key (or IDLE) -> joules
    counter_delta_j: float
    window: tuple[float, float]


class MeteringError(ValueError):
    """The inputs cannot be metered as given (the message says why)."""


class PowerCurve:
    """Piecewise-linear power over time, with its integral precomputed."""

    def __init__(self, samples: Sequence[tuple[float, float]]) -> None:
        points = sorted(samples)
        self.t = [p[0] for p in points]
        self.w = [p[1] for p in points]
        self._cumulative = [0.0]
        for i in range(1, len(points)):
            dt = self.t[i] - self.t[i - 1]
            self._cumulative.append(self._cumulative[-1] + dt * (self.w[i] + self.w[i - 1]) / 2)

    def _power_at(self, t: float, i: int) -> float:
        """Power at t, where self.t[i-1] <= t <= self.t[i]."""
        t0, t1 = self.t[i - 1], self.t[i]
        if t1 == t0:
            return self.w[i]
        return self.w[i - 1] + (self.w[i] - self.w[i - 1]) * (t - t0) / (t1 - t0)

    def _integral_to(self, t: float) -> float:
        """Integral from the first sample to t (held flat outside the samples)."""
        if t <= self.t[0]:
            return (t - self.t[0]) * self.w[0]
        if t >= self.t[-1]:
            return self._cumulative[-1] + (t - self.t[-1]) * self.w[-1]
        i = bisect.bisect_right(self.t, t)
        p = self._power_at(t, i)
        return self._cumulative[i - 1] + (t - self.t[i - 1]) * (self.w[i - 1] + p) / 2

    def integral(self, a: float, b: float) -> float:
        if not self.t:
            return 0.0
        return self._integral_to(b) - self._integral_to(a)


def counter_deltas(readings: Sequence[CounterReading], power: PowerCurve) -> list[tuple[float, float, float]]:
    """(t0, t1, joules) per pair of consecutive readings; a reset is bridged with
    max(what the restarted counter saw, power integrated over the span)."""
    out = []
    for a, b in itertools.pairwise(readings):
        if b.t < a.t:
            raise MeteringError(f"counter readings out of order at t={b.t}")
        if b.reset or b.energy_j < a.energy_j:
            delta = max(b.energy_j, power.integral(a.t, b.t))
        else:
            delta = b.energy_j - a.energy_j
        out.append((a.t, b.t, delta))
    return out


def split_gpu(
    intervals: Sequence[Interval],
    readings: Sequence[CounterReading],
    power_samples: Sequence[tuple[float, float]],
    window: tuple[float, float] | None = None,
) -> GpuUsage:
    """Meter one GPU. GPU-seconds come from the intervals alone, clipped to the
    window (default: first to last counter reading); energy from the counter."""
    if len(readings) < 2 and window is None:
        raise MeteringError("need two energy-counter readings to meter a GPU")
    ordered = sorted(intervals, key=lambda iv: iv.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end:
            raise MeteringError(f"allocations {a.key!r} and {b.key!r} overlap on one GPU")
    for iv in ordered:
        if iv.end < iv.start:
            raise MeteringError(f"allocation {iv.key!r} ends before it starts")
    lo, hi = window if window is not None else (readings[0].t, readings[-1].t)
    seconds: dict[str, float] = {iv.key: 0.0 for iv in ordered}
    busy = 0.0
    for iv in ordered:
        overlap = max(0.0, min(iv.end, hi) - max(iv.start, lo))
        seconds[iv.key] += overlap
        busy += overlap
    seconds[IDLE] = (hi - lo) - busy

    curve = PowerCurve(power_samples)
    energy: dict[str, float] = {iv.key: 0.0 for iv in ordered}
    energy[IDLE] = 0.0
    total = 0.0
    for t0, t1, delta in counter_deltas(readings, curve):
        for owner, share in _spread(delta, t0, t1, ordered, curve, lo, hi):
            energy[owner] += share
            total += share
    return GpuUsage(seconds, energy, total, (lo, hi))


def _spread(
    delta: float, t0: float, t1: float, ordered: Sequence[Interval], curve: PowerCurve, lo: float, hi: float
) -> list[tuple[str, float]]:
    """Divide one counter delta over [t0, t1) among the allocations, idle and
    what lies outside the window; returns the pieces inside the window."""
    if t1 <= t0:
        return [(IDLE, delta)] if lo <= t0 <= hi else []
    cuts = sorted({t0, t1, *(t for t in (lo, hi) if t0 < t < t1)})
    for iv in ordered:
        cuts.extend(t for t in (iv.start, iv.end) if t0 < t < t1)
    starts = [iv.start for iv in ordered]
    out = []
    for a, b, share in split_span(delta, sorted(set(cuts)), curve):
        mid = (a + b) / 2
        if not lo <= mid <= hi:
            continue
        k = bisect.bisect_right(starts, mid) - 1
        out.append((ordered[k].key if k >= 0 and ordered[k].start <= mid < ordered[k].end else IDLE, share))
    return out


def split_span(delta: float, cuts: Sequence[float], curve: PowerCurve) -> list[tuple[float, float, float]]:
    """Divide one counter delta over [cuts[0], cuts[-1]) into (a, b, joules) pieces
    between consecutive cuts (sorted, distinct), in proportion to the power
    integrated over each piece, by duration where no power was sampled."""
    pieces = list(itertools.pairwise(cuts))
    weights = [curve.integral(a, b) if curve.t else b - a for a, b in pieces]
    if sum(weights) <= 0:
        weights = [b - a for a, b in pieces]
    total = sum(weights)
    shares = [delta * w / total for w in weights]
    # Rounding: the last piece takes the remainder so the pieces sum to delta.
    shares[-1] = delta - sum(shares[:-1])
    return [(a, b, share) for (a, b), share in zip(pieces, shares, strict=True)]
