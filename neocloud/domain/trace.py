"""Recorded NVML readings (the format of tests/data/*.jsonl, each with a
.meta.json beside it): parsing, and turning records into readings. The agent
replays them in time (`agent/gpu/replay.py`); metering audits them at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.domain.gpu import EnergyReading, GpuInfo, GpuProcess, GpuSample, PowerSample, Reading


class TraceError(ValueError):
    """A trace or its meta file cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceRecord:
    t_s: float
    power_mw: int
    power_instant_mw: int | None
    energy_mj: int | None
    util_gpu: int
    util_mem: int
    mem_used: int
    temp_c: int
    sm_clock: int
    procs: tuple[GpuProcess, ...]


@dataclass(frozen=True, slots=True)
class Trace:
    info: GpuInfo
    records: tuple[TraceRecord, ...]

    @property
    def counter_delta_mj(self) -> int:
        readings = [r.energy_mj for r in self.records if r.energy_mj is not None]
        return readings[-1] - readings[0] if readings else 0


def meta_path(trace_path: Path) -> Path:
    return trace_path.with_name(trace_path.name.removesuffix(".jsonl") + ".meta.json")


def load_trace(path: str | Path, index: int = 0) -> Trace:
    """Parse a trace and its meta file; errors name the file and line."""
    path = Path(path)
    meta_file = meta_path(path)
    try:
        device = json.loads(meta_file.read_text())["device"]
        info = GpuInfo(
            index=index,
            uuid=str(device["uuid"]),
            model=str(device["name"]),
            memory_total_bytes=int(device["mem"][0]),
            power_limit_mw=int(device["power_limit_mw"]),
        )
    except FileNotFoundError as e:
        raise TraceError(f"{meta_file}: missing; a trace needs its .meta.json beside it") from e
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise TraceError(f"{meta_file}: not a trace meta file ({e!r})") from e
    records: list[TraceRecord] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise TraceError(f"{path}: cannot read trace ({e.strerror})") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(_parse_record(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise TraceError(f"{path}:{lineno}: bad trace record ({e!r})") from e
        if len(records) > 1 and records[-1].t_s < records[-2].t_s:
            raise TraceError(f"{path}:{lineno}: time goes backwards")
    if not records:
        raise TraceError(f"{path}: no records")
    return Trace(info, tuple(records))


def _parse_record(raw: dict[str, Any]) -> TraceRecord:
    energy = raw.get("energy_mj")
    instant = raw.get("power_instant_mw")
    return TraceRecord(
        t_s=float(raw["t"]),
        power_mw=int(raw["power_mw"]),
        power_instant_mw=None if instant is None else int(instant),
        energy_mj=None if energy is None else int(energy),
        util_gpu=int(raw["util_gpu"]),
        util_mem=int(raw["util_mem"]),
        mem_used=int(raw["mem_used"]),
        temp_c=int(raw["temp_c"]),
        sm_clock=int(raw["sm_clock"]),
        procs=tuple(GpuProcess(int(pid), int(mem)) for pid, mem in raw.get("procs", [])),
    )


def add_record(reading: Reading, uuid: str, stamp_us: int, r: TraceRecord) -> None:
    """Append what one record holds to `reading`, stamped `stamp_us`."""
    reading.samples.append(
        GpuSample(
            uuid=uuid,
            timestamp_us=stamp_us,
            power_mw=r.power_mw,
            gpu_util_percent=r.util_gpu,
            memory_util_percent=r.util_mem,
            memory_used_bytes=r.mem_used,
            temperature_c=r.temp_c,
            sm_clock_mhz=r.sm_clock,
            processes=r.procs,
        )
    )
    if r.power_instant_mw is not None:
        reading.power_samples.append(PowerSample(uuid, stamp_us, r.power_instant_mw))
    if r.energy_mj is not None:
        reading.energy.append(EnergyReading(uuid, stamp_us, r.energy_mj))


def check_one_trace_per_gpu(traces: Sequence[Trace]) -> None:
    """Two recordings of one GPU cannot be told apart once they are readings."""
    uuids = [t.info.uuid for t in traces]
    if len(set(uuids)) != len(uuids):
        raise TraceError("two traces report the same GPU UUID; replay each GPU once")


def recorded_reading(traces: Sequence[Trace]) -> Reading:
    """Every record of every trace at once, stamped with its recorded time (each trace keeps its own)."""
    check_one_trace_per_gpu(traces)
    reading = Reading()
    for trace in traces:
        for record in trace.records:
            add_record(reading, trace.info.uuid, round(record.t_s * 1e6), record)
    return reading
