"""Attribution on the ingest path: each energy-counter delta goes to the
allocation (or idle) that held the GPU, per UTC hour, as it arrives.

A delta that lies inside one owner and one hour (nearly all of them) is one
dict update; one that crosses an allocation or hour boundary is split with
`split.split_span`, the code the audit replay uses, in proportion to the
power samples kept for it. Spans later than the book's `complete_to` wait.
Tick statistics (utilisation, peak power, memory high-water mark) go the
same way, per series.

What is attributed leaves as increments (`take`) committed with the per-GPU
watermark (attributed up to when, and how much in all), in the same
transaction; a failed commit gives them back (`give_back`). After a restart,
the energy accumulator's total past the watermark is attributed as one span
(`restore`), so no joule is lost or counted twice.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from neocloud.domain.fleet import Cell, CellKey
from neocloud.domain.hours import HOUR_S, hour_cuts, hour_of
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.metering.split import PowerCurve, split_span

logger = logging.getLogger(__name__)

_US = 1_000_000
# A GPU whose spans the book has not covered for this long is attributed with
# the book as it is (a controller that stopped must not grow memory forever).
MAX_PENDING_SPANS = 4096


class SeriesLike(Protocol):
    """The columns of a telemetry GpuSeries that metering reads."""

    @property
    def timestamp_us(self) -> Sequence[int]: ...
    @property
    def power_mw(self) -> Sequence[int]: ...
    @property
    def gpu_util_percent(self) -> Sequence[int]: ...
    @property
    def memory_used_bytes(self) -> Sequence[int]: ...
    @property
    def power_sample_us(self) -> Sequence[int]: ...
    @property
    def power_sample_mw(self) -> Sequence[int]: ...


class _Span(NamedTuple):
    # A tuple, not a frozen dataclass: one is made per energy reading, at a third of the cost.
    t0: float
    t1: float
    delta_mj: float


@dataclass(slots=True)
class _GpuMeter:
    last_reading_s: float = -math.inf
    attributed_mj: float = 0.0  # everything ever attributed for this GPU
    spans: deque[_Span] = field(default_factory=deque)
    power: deque[tuple[float, SeriesLike]] = field(default_factory=deque)  # (last time, series) a span may need
    stats: deque[tuple[float, float, SeriesLike]] = field(default_factory=deque)  # (first, last tick, series)


class Attributor:
    def __init__(self) -> None:
        self.book = AllocationBook()  # no allocations, complete forever: a fleet without a controller is idle
        self._meters: dict[str, _GpuMeter] = {}
        self._waiting: set[str] = set()  # GPUs with spans or stats to attribute
        self.cells: dict[CellKey, Cell] = {}
        self.watermarks: dict[str, tuple[int, float]] = {}  # uuid -> (attributed to µs, total mJ), since the last take
        self.pending_mj = 0.0  # received, not yet attributed

    # --- input (ingest thread) ------------------------------------------------------

    def _meter(self, uuid: str) -> _GpuMeter:
        # Not setdefault(uuid, _GpuMeter()): that builds a meter and its deques on every call.
        m = self._meters.get(uuid)
        if m is None:
            m = self._meters[uuid] = _GpuMeter()
        return m

    def on_series(self, uuid: str, series: SeriesLike) -> None:
        m = self._meter(uuid)
        # Times are read once here: on upb every field access builds a wrapper.
        ts, buffered = series.timestamp_us, series.power_sample_us
        last = max(ts[-1] if ts else 0, buffered[-1] if buffered else 0) / _US
        if ts:
            m.stats.append((ts[0] / _US, ts[-1] / _US, series))
        if buffered or series.power_mw:
            m.power.append((last, series))
        self._waiting.add(uuid)

    def on_delta(self, uuid: str, t0_us: int, t1_us: int, delta_mj: float) -> None:
        """The counter rose by `delta_mj` between two readings (resets already bridged)."""
        m = self._meter(uuid)
        m.spans.append(_Span(t0_us / _US, t1_us / _US, delta_mj))
        self.pending_mj += delta_mj
        m.last_reading_s = t1_us / _US
        self._waiting.add(uuid)

    def on_first_reading(self, uuid: str, t_us: int) -> None:
        self._meter(uuid).last_reading_s = t_us / _US

    # --- attribution ------------------------------------------------------------------

    def flush(self) -> None:
        """Attribute every span and series the book covers."""
        book = self.book
        for uuid in list(self._waiting):
            m = self._meters[uuid]
            forced = len(m.spans) > MAX_PENDING_SPANS
            if forced:
                logger.warning(
                    "GPU %s: %d spans wait for the allocation book; attributing them now", uuid, len(m.spans)
                )
            while m.spans and (forced or m.spans[0].t1 <= book.complete_to):
                span = m.spans.popleft()
                self._attribute_span(uuid, m, span)
                self.pending_mj -= span.delta_mj
                m.attributed_mj += span.delta_mj
                self.watermarks[uuid] = (round(span.t1 * _US), m.attributed_mj)
            if m.stats and (forced or m.stats[0][1] <= book.complete_to):
                self._attribute_stats(uuid, m.stats, math.inf if forced else book.complete_to)
            # Power is kept only for spans still to come; before a GPU's first counter reading
            # (or on a GPU without one) none will need it.
            keep_from = m.spans[0].t0 if m.spans else m.last_reading_s
            while m.power and m.power[0][0] < keep_from:
                m.power.popleft()
            if keep_from == -math.inf:
                m.power.clear()
            if not m.spans and not m.stats:
                self._waiting.discard(uuid)

    def _cell(self, uuid: str, owner: str, hour: int) -> Cell:
        key = (uuid, owner, hour)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        return cell

    def _attribute_span(self, uuid: str, m: _GpuMeter, span: _Span) -> None:
        t0, t1 = span.t0, span.t1
        book = self.book
        if t1 <= t0:
            self._cell(uuid, book.owner_at(uuid, t0), hour_of(t0)).energy_mj += span.delta_mj
            return
        hour = hour_of(t0)
        owner = book.owner(uuid, t0, t1)
        if owner is not None and t1 <= hour + HOUR_S:  # one owner, no hour boundary inside
            self._cell(uuid, owner, hour).energy_mj += span.delta_mj
            return
        cuts = sorted({t0, t1, *hour_cuts(t0, t1), *book.boundaries(uuid, t0, t1)})
        curve = PowerCurve(_power_points([s for _, s in m.power], t0, t1))
        for a, b, share in split_span(span.delta_mj, cuts, curve):
            mid = (a + b) / 2
            self._cell(uuid, book.owner_at(uuid, mid), hour_of(mid)).energy_mj += share

    def _attribute_stats(self, uuid: str, pending: deque[tuple[float, float, SeriesLike]], until: float) -> None:
        """Tick statistics of the series ending by `until`. Consecutive series of one owner and
        hour share a cell (the common case), so each costs a few C-level reductions."""
        cell, lo, hi = None, 0.0, 0.0
        while pending and pending[0][1] <= until:
            t0, t1, s = pending.popleft()
            if cell is None or t0 < lo or t1 >= hi:
                owner, start, end = self.book.holding(uuid, t0)
                hour = hour_of(t0)
                lo, hi = max(start, hour), min(end, hour + HOUR_S)
                if t1 >= hi:  # the series crosses an allocation or hour boundary: tick by tick
                    self._attribute_ticks(uuid, s)
                    cell = None
                    continue
                cell = self._cell(uuid, owner, hour)
            # Each column is copied out once: on upb a slice is one C call, and iterating
            # the container (sum, max) builds its ints one by one at ~3x the cost.
            util, power, memory = s.gpu_util_percent[:], s.power_mw[:], s.memory_used_bytes[:]
            if util:
                cell.util_sum += sum(util)
                cell.util_count += len(util)
            if power:
                peak = max(power)
                if peak > cell.peak_power_mw:
                    cell.peak_power_mw = peak
            if memory:
                top = max(memory)
                if top > cell.memory_peak_bytes:
                    cell.memory_peak_bytes = top

    def _attribute_ticks(self, uuid: str, s: SeriesLike) -> None:
        util, power, memory = s.gpu_util_percent, s.power_mw, s.memory_used_bytes
        for i, t_us in enumerate(s.timestamp_us):
            t = t_us / _US
            cell = self._cell(uuid, self.book.owner_at(uuid, t), hour_of(t))
            if util:
                cell.util_sum += util[i]
                cell.util_count += 1
            if power:
                cell.peak_power_mw = max(cell.peak_power_mw, power[i])
            if memory:
                cell.memory_peak_bytes = max(cell.memory_peak_bytes, memory[i])

    # --- the commit ----------------------------------------------------------------------

    def take(self) -> tuple[dict[CellKey, Cell], dict[str, tuple[int, float]]]:
        """The increments and watermarks to commit; the attributor forgets them."""
        cells, self.cells = self.cells, {}
        marks, self.watermarks = self.watermarks, {}
        return cells, marks

    def give_back(self, cells: dict[CellKey, Cell], marks: dict[str, tuple[int, float]]) -> None:
        """A commit failed: merge what it carried into what was attributed since."""
        for key, cell in cells.items():
            mine = self.cells.get(key)
            if mine is None:
                self.cells[key] = cell
            else:
                mine.merge(cell)
        for uuid, mark in marks.items():
            self.watermarks[uuid] = max(mark, self.watermarks.get(uuid, mark))

    def forget(self, uuid: str) -> None:
        """Drop everything received for this GPU since its last commit (the store
        refused its node's data); `restore` then starts it again from the store."""
        m = self._meters.pop(uuid, None)
        if m is not None:
            self.pending_mj -= sum(span.delta_mj for span in m.spans)
        self._waiting.discard(uuid)
        self.cells = {key: cell for key, cell in self.cells.items() if key[0] != uuid}
        self.watermarks.pop(uuid, None)

    def restore(self, uuid: str, attributed_mj: float, t0_us: int, t1_us: int, unattributed_mj: float) -> None:
        """After a restart: what was attributed before it, and the energy since the watermark."""
        m = self._meter(uuid)
        m.attributed_mj = attributed_mj
        m.last_reading_s = t0_us / _US
        if unattributed_mj > 0 or t1_us > t0_us:
            self.on_delta(uuid, t0_us, max(t0_us, t1_us), max(0.0, unattributed_mj))


def _power_points(series: Sequence[SeriesLike], t0: float, t1: float) -> list[tuple[float, float]]:
    """(t, W) around [t0, t1]: the driver's power buffer where a series has one, else its ticks."""
    points: list[tuple[float, float]] = []
    lo, hi = t0 * _US, t1 * _US
    for s in series:
        ts, mw = (s.power_sample_us, s.power_sample_mw) if s.power_sample_us else (s.timestamp_us, s.power_mw)
        if not mw or ts[-1] < lo or ts[0] > hi:
            continue
        points.extend((t / _US, p / 1000) for t, p in zip(ts, mw, strict=True))
    return points
