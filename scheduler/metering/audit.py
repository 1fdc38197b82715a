"""Recompute usage from a recorded telemetry trace and a list of allocation
intervals (`neocloud meter replay`), so an operator or a tenant can check a bill
from raw readings. The trace's records become readings (`neocloud.domain.trace`)
and go through `split`, the code the live path uses."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.domain.gpu import Reading
from neocloud.domain.trace import load_trace, recorded_reading
from neocloud.scheduler.metering.split import IDLE, CounterReading, Interval, MeteringError, split_gpu

CSV_HEADER = ["job", "tenant", "class", "gpu_uuid", "start", "end"]


@dataclass(frozen=True, slots=True)
class AllocationRow:
    job: str
    tenant: str
    job_class: str
    gpu_uuid: str
    start: float
    end: float

    @property
    def key(self) -> str:
        return f"{self.job}\x1f{self.gpu_uuid}\x1f{self.start}"


def read_allocations(path: Path) -> list[AllocationRow]:
    rows = []
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != CSV_HEADER:
                raise MeteringError(f"{path}:1: header must be {','.join(CSV_HEADER)}, not {','.join(header or [])}")
            for lineno, fields in enumerate(reader, start=2):
                if not fields:
                    continue
                if len(fields) != len(CSV_HEADER):
                    raise MeteringError(f"{path}:{lineno}: expected {len(CSV_HEADER)} fields, got {len(fields)}")
                try:
                    start, end = float(fields[4]), float(fields[5])
                except ValueError as e:
                    raise MeteringError(f"{path}:{lineno}: start and end must be Unix seconds ({e})") from e
                if not end > start:
                    raise MeteringError(f"{path}:{lineno}: end {end} is not after start {start}")
                rows.append(AllocationRow(fields[0], fields[1], fields[2], fields[3], start, end))
    except OSError as e:
        raise MeteringError(f"{path}: cannot read ({e.strerror})") from e
    return rows


def meter_inputs(readings: Iterable[Reading]) -> dict[str, tuple[list[CounterReading], list[tuple[float, float]]]]:
    """Per GPU: counter readings and power points (W over s). The driver's power
    buffer is used where a GPU has one, else the per-tick power."""
    counters: dict[str, list[CounterReading]] = defaultdict(list)
    buffered: dict[str, list[tuple[float, float]]] = defaultdict(list)
    ticks: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for reading in readings:
        for e in reading.energy:
            counters[e.uuid].append(CounterReading(e.timestamp_us / 1e6, e.energy_mj / 1e3, e.counter_reset))
        for p in reading.power_samples:
            buffered[p.uuid].append((p.timestamp_us / 1e6, p.power_mw / 1e3))
        for s in reading.samples:
            if s.power_mw is not None:
                ticks[s.uuid].append((s.timestamp_us / 1e6, s.power_mw / 1e3))
    return {uuid: (counters[uuid], buffered.get(uuid) or ticks[uuid]) for uuid in counters}


def replay(traces: Sequence[Path], allocations: Sequence[AllocationRow]) -> dict[str, Any]:
    loaded = [load_trace(path, i) for i, path in enumerate(traces)]
    inputs = meter_inputs([recorded_reading(loaded)])
    by_gpu: dict[str, list[AllocationRow]] = defaultdict(list)
    for row in allocations:
        if row.gpu_uuid not in inputs:
            raise MeteringError(f"allocation of job {row.job!r} names GPU {row.gpu_uuid}, which is not in the trace")
        by_gpu[row.gpu_uuid].append(row)
    result: dict[str, Any] = {"allocations": [], "idle": [], "counter_delta_joules": {}}
    for uuid, (counters, power) in inputs.items():
        rows = by_gpu.get(uuid, [])
        usage = split_gpu([Interval(r.key, r.start, r.end) for r in rows], counters, power)
        for r in rows:
            result["allocations"].append(
                {
                    "job": r.job,
                    "tenant": r.tenant,
                    "class": r.job_class,
                    "gpu_uuid": uuid,
                    "start": r.start,
                    "end": r.end,
                    "gpu_seconds": round(usage.gpu_seconds[r.key], 6),
                    "energy_joules": round(usage.energy_j[r.key], 6),
                }
            )
        result["idle"].append(
            {
                "gpu_uuid": uuid,
                "gpu_seconds": round(usage.gpu_seconds[IDLE], 6),
                "energy_joules": round(usage.energy_j[IDLE], 6),
            }
        )
        result["counter_delta_joules"][uuid] = round(usage.counter_delta_j, 6)
        result.setdefault("window", {})[uuid] = list(usage.window)
    return result
