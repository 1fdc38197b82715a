"""Attribution on the ingest path: conservation per GPU, the audit replay's
answer on the real H200 trace, waiting for the book, and the commit hand-off."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.domain.trace import load_trace, recorded_reading
from neocloud.scheduler.metering.attribution import Attributor
from neocloud.scheduler.metering.audit import meter_inputs
from neocloud.scheduler.metering.book import IDLE_OWNER, AllocationBook
from neocloud.scheduler.metering.split import CounterReading, Interval, PowerCurve, counter_deltas, split_gpu
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.records import Allocation
from tests.helpers import H200_TRACE as TRACE

UUID = "GPU-test"


@dataclass(frozen=True)
class StoredSeries:
    """The columns of a telemetry GpuSeries that metering reads."""

    timestamp_us: list[int]
    power_mw: list[int]
    gpu_util_percent: list[int]
    memory_used_bytes: list[int]
    power_sample_us: list[int]
    power_sample_mw: list[int]


def alloc(alloc_id: str, start: float, end: float | None, uuid: str = UUID) -> Allocation:
    return Allocation(alloc_id, "job-" + alloc_id, "acme", JobClass.SPOT, "node-1", (uuid,), start, end)


def ticks(points: list[tuple[float, float]], chunk: int) -> list[StoredSeries]:
    """Power points (s, W) as telemetry series of `chunk` ticks each."""
    out = []
    for i in range(0, len(points), chunk):
        part = points[i : i + chunk]
        t_us = [round(t * 1e6) for t, _ in part]
        out.append(
            StoredSeries(t_us, [round(w * 1e3) for _, w in part], [50] * len(part), [1 << 30] * len(part), [], [])
        )
    return out


def feed(att: Attributor, uuid: str, readings: list[tuple[float, float, bool]], series: list[StoredSeries]) -> float:
    """Interleave series and counter deltas by time, as batches would; returns the counter delta (mJ)."""
    counter = [CounterReading(t, mj / 1e3, r) for t, mj, r in readings]
    points = [(t / 1e6, p / 1e3) for s in series for t, p in zip(s.timestamp_us, s.power_mw, strict=True)]
    points += [(t / 1e6, p / 1e3) for s in series for t, p in zip(s.power_sample_us, s.power_sample_mw, strict=True)]
    deltas = counter_deltas(counter, PowerCurve(points))
    att.on_first_reading(uuid, round(readings[0][0] * 1e6))
    events: list[tuple[float, int, object]] = [(max([*s.timestamp_us, *s.power_sample_us]) / 1e6, 0, s) for s in series]
    events += [(t1, 1, (t0, t1, j)) for t0, t1, j in deltas]
    for _, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == 0:
            att.on_series(uuid, item)  # type: ignore[arg-type]
        else:
            t0, t1, j = item  # type: ignore[misc]
            att.on_delta(uuid, round(t0 * 1e6), round(t1 * 1e6), j * 1e3)
    return sum(j for _, _, j in deltas) * 1e3


def energy_by_owner(att: Attributor) -> dict[str, float]:
    out: dict[str, float] = {}
    for (_, owner, _), cell in att.cells.items():
        out[owner] = out.get(owner, 0.0) + cell.energy_mj
    return out


def test_real_h200_trace_split_among_allocations_matches_the_audit_replay() -> None:
    ((uuid, (counters, power)),) = meter_inputs([recorded_reading([load_trace(TRACE, 0)])]).items()
    first, last = counters[0].t, counters[-1].t
    span = last - first
    cuts = [first + span * f for f in (0.13, 0.41, 0.42, 0.77)]  # boundaries inside counter spans
    allocations = [alloc("a1", cuts[0], cuts[1], uuid), alloc("a2", cuts[2], cuts[3], uuid)]
    audit = split_gpu([Interval(a.allocation_id, a.start, a.end or math.inf) for a in allocations], counters, power)

    att = Attributor()
    att.book = AllocationBook(allocations)
    series = [
        StoredSeries(
            [],
            [],
            [],
            [],
            [round(t * 1e6) for t, _ in power[i : i + 50]],
            [round(w * 1e3) for _, w in power[i : i + 50]],
        )
        for i in range(0, len(power), 50)
    ]
    readings = [(c.t, c.energy_j * 1e3, c.reset) for c in counters]
    delta_mj = feed(att, uuid, readings, series)
    att.flush()
    got = energy_by_owner(att)
    assert sum(got.values()) == pytest.approx(delta_mj, rel=1e-9)  # conservation, exactly
    assert delta_mj / 1e3 == pytest.approx(audit.counter_delta_j, rel=1e-9)
    for key in ("a1", "a2"):
        assert got[key] / 1e3 == pytest.approx(audit.energy_j[key], rel=1e-3)  # the audit's split, within 0.1 %
    assert got[IDLE_OWNER] / 1e3 == pytest.approx(audit.energy_j["idle"], rel=1e-3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.5, 30.0), min_size=2, max_size=40),  # gaps between counter readings, s
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=4),  # allocations as fractions of the run
    st.lists(st.integers(0, 3), min_size=1, max_size=40),  # which readings follow a counter reset
    st.integers(1, 12),  # ticks per series
    st.integers(0, 7200),  # start offset: runs cross hour boundaries
    st.lists(st.booleans(), min_size=1, max_size=20),  # which series are lost (a spool bound, a gap)
)
def test_every_joule_lands_once_whatever_the_book(
    gaps: list[float],
    fractions: list[tuple[float, float]],
    resets: list[int],
    chunk: int,
    offset: int,
    lost: list[bool],
) -> None:
    start = 1_800_000_000.0 + offset
    times = list(itertools.accumulate([start, *gaps]))
    counter, readings = 5e9, []
    for i, t in enumerate(times):
        reset = i > 0 and resets[i % len(resets)] == 0
        counter = 1_000.0 if reset else counter + 400_000 * (t - times[i - 1] if i else 0)
        readings.append((t, counter, reset))
    points = [(times[0] + k * 0.5, 100 + (k % 7) * 90.0) for k in range(int((times[-1] - times[0]) / 0.5) + 1)]
    run = times[-1] - times[0]
    allocations, at = [], times[0]
    for i, (a, b) in enumerate(fractions):  # non-overlapping, in order
        s = at + a * run / 4
        e = s + b * run / 4
        allocations.append(
            alloc(f"a{i}", s, e if i % 2 == 0 else None) if i == len(fractions) - 1 else alloc(f"a{i}", s, e)
        )
        at = e
    att = Attributor()
    att.book = AllocationBook(allocations, complete_to=times[len(times) // 2])
    series = [s for i, s in enumerate(ticks(points, chunk)) if not lost[i % len(lost)]]
    delta_mj = feed(att, UUID, readings, series)
    att.flush()
    waiting = sum(energy_by_owner(att).values())
    assert waiting <= delta_mj + 1e-6  # what the book does not cover yet waits
    att.book = AllocationBook(allocations)
    att.flush()
    got = energy_by_owner(att)
    assert sum(got.values()) == pytest.approx(delta_mj, rel=1e-9, abs=1e-6)
    assert all(v >= -1e-6 for v in got.values())
    for (_, _, hour), _ in att.cells.items():
        assert hour % 3600 == 0 and times[0] - 3600 < hour <= times[-1]


def test_increments_survive_a_failed_commit() -> None:
    att = Attributor()
    att.book = AllocationBook([alloc("a1", 0.0, None)])
    att.on_first_reading(UUID, 1_000_000)
    att.on_delta(UUID, 1_000_000, 11_000_000, 5_000.0)
    att.flush()
    cells, marks = att.take()
    assert att.cells == {} and marks == {UUID: (11_000_000, 5_000.0)}
    att.on_delta(UUID, 11_000_000, 21_000_000, 7_000.0)
    att.flush()
    att.give_back(cells, marks)
    (cell,) = att.cells.values()
    assert cell.energy_mj == 12_000.0 and att.watermarks == {UUID: (21_000_000, 12_000.0)}


def test_the_book_owner_of_a_span() -> None:
    book = AllocationBook([alloc("a1", 10.0, 20.0), alloc("a2", 30.0, None)])
    assert book.owner(UUID, 11, 19) == "a1"
    assert book.owner(UUID, 5, 9) == IDLE_OWNER
    assert book.owner(UUID, 21, 29) == IDLE_OWNER
    assert book.owner(UUID, 15, 25) is None  # crosses a1's end
    assert book.owner(UUID, 25, 35) is None  # crosses a2's start
    assert book.owner(UUID, 31, 1e12) == "a2"
    assert book.boundaries(UUID, 0, 100) == [10.0, 20.0, 30.0]
    assert book.owner("GPU-other", 0, 1) == IDLE_OWNER


def test_a_gpu_without_an_energy_counter_keeps_no_power_samples() -> None:
    att = Attributor()
    for k in range(100):
        att.on_series(UUID, StoredSeries([k * 1_000_000], [100_000], [10], [1 << 30], [], []))
        att.flush()
    assert not att._meters[UUID].power  # nothing will need them: no counter delta can come before a reading
    (cell,) = att.cells.values()
    assert cell.util_count == 100 and cell.peak_power_mw == 100_000  # its statistics still count
