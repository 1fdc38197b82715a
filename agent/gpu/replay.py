"""Replays recorded NVML readings (the format of tests/data/*.jsonl).

Each trace is one GPU; its identity comes from the `.meta.json` beside it.
Records are released as replay time passes (optionally faster than real
time). Replay time starts at the wall clock and keeps the recording's
spacing, so a real H200's readings flow through the pipeline as if read now,
and power x time still matches the energy counter, which keeps its recorded
values and cadence.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.agent.gpu.types import (
    BackendError,
    EnergyReading,
    GpuInfo,
    GpuProcess,
    GpuSample,
    PowerSample,
    Reading,
)
from neocloud.domain.clock import wall_clock_us

logger = logging.getLogger(__name__)


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
        raise BackendError(f"{meta_file}: missing; a trace needs its .meta.json beside it") from e
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BackendError(f"{meta_file}: not a trace meta file ({e!r})") from e
    records: list[TraceRecord] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise BackendError(f"{path}: cannot read trace ({e.strerror})") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(_parse_record(json.loads(line)))
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(f"{path}:{lineno}: bad trace record ({e!r})") from e
        if len(records) > 1 and records[-1].t_s < records[-2].t_s:
            raise BackendError(f"{path}:{lineno}: time goes backwards")
    if not records:
        raise BackendError(f"{path}: no records")
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


class ReplayBackend:
    """Replays one trace per GPU, `speed` times faster than it was recorded."""

    name = "replay"

    def __init__(
        self,
        traces: Sequence[Trace],
        speed: float = 1.0,
        clock_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        if not traces:
            raise BackendError("replay needs at least one trace (--replay-trace FILE)")
        if speed <= 0:
            raise BackendError(f"--replay-speed must be positive, not {speed}")
        uuids = [t.info.uuid for t in traces]
        if len(set(uuids)) != len(uuids):
            raise BackendError("two traces report the same GPU UUID; replay each GPU once")
        self._traces = list(traces)
        self._speed = speed
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._start_us: int | None = None
        self._next = [0] * len(traces)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], speed: float = 1.0) -> ReplayBackend:
        return cls([load_trace(p, i) for i, p in enumerate(paths)], speed)

    @property
    def finished(self) -> bool:
        return all(n >= len(t.records) for n, t in zip(self._next, self._traces, strict=True))

    def inventory(self) -> list[GpuInfo]:
        return [t.info for t in self._traces]

    def read(self, read_energy: bool) -> Reading:
        # The trace decides the energy cadence: it holds the readings it holds.
        del read_energy
        reading = Reading()
        with self._lock:
            start_us = self._started()
            elapsed_s = (self.now_us() - start_us) / 1e6
            for i, trace in enumerate(self._traces):
                t0 = trace.records[0].t_s
                while self._next[i] < len(trace.records) and trace.records[self._next[i]].t_s - t0 <= elapsed_s:
                    record = trace.records[self._next[i]]
                    self._next[i] += 1
                    stamp = start_us + round((record.t_s - t0) * 1e6)
                    self._emit(reading, trace.info.uuid, stamp, record)
        return reading

    def _started(self) -> int:
        if self._start_us is None:
            self._start_us = self._clock_us()
        return self._start_us

    def now_us(self) -> int:
        """Replay time: the wall clock at the first read, then `speed` times faster."""
        start_us = self._started()
        return start_us + round((self._clock_us() - start_us) * self._speed)

    @staticmethod
    def _emit(reading: Reading, uuid: str, stamp: int, r: TraceRecord) -> None:
        reading.samples.append(
            GpuSample(
                uuid=uuid,
                timestamp_us=stamp,
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
            reading.power_samples.append(PowerSample(uuid, stamp, r.power_instant_mw))
        if r.energy_mj is not None:
            reading.energy.append(EnergyReading(uuid, stamp, r.energy_mj))

    def close(self) -> None:
        logger.debug("replay backend closed")
