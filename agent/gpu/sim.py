"""Simulated GPUs shaped after the real H200 traces (DESIGN.md section 5).

Power follows a load you set per GPU: ~77 W with no CUDA context, ~115 W idle
with a context, up to ~670 W flat out (700 W limit). The energy counter
integrates the reported power exactly (trapezoid between reads), so the
pipeline's conservation checks hold against it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable

from neocloud.agent.gpu.types import EnergyReading, GpuInfo, GpuProcess, GpuSample, Reading
from neocloud.clock import wall_clock_us

logger = logging.getLogger(__name__)

H200_MEMORY_BYTES = 150_754_820_096
H200_POWER_LIMIT_MW = 700_000
IDLE_NO_CONTEXT_MW = 77_000
IDLE_WITH_CONTEXT_MW = 115_000
FLAT_OUT_MW = 670_000
BASE_MEMORY_BYTES = 644_939_776


def sim_uuid(node_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{node_id}/{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class _SimGpu:
    def __init__(self, info: GpuInfo) -> None:
        self.info = info
        self.load: float | None = None
        self.rng = random.Random(info.uuid)
        self.energy_mj = 0.0
        self.last_t_us: int | None = None
        self.last_power_mw = IDLE_NO_CONTEXT_MW

    def power_mw(self) -> int:
        if self.load is None:
            base = float(IDLE_NO_CONTEXT_MW)
        else:
            base = IDLE_WITH_CONTEXT_MW + self.load * (FLAT_OUT_MW - IDLE_WITH_CONTEXT_MW)
        jitter = self.rng.uniform(-0.01, 0.01) * base
        return int(min(base + jitter, self.info.power_limit_mw))

    def advance(self, now_us: int) -> int:
        power = self.power_mw()
        if self.last_t_us is not None and now_us > self.last_t_us:
            dt_s = (now_us - self.last_t_us) / 1e6
            self.energy_mj += (self.last_power_mw + power) / 2 * dt_s
        self.last_t_us = now_us
        self.last_power_mw = power
        return power


class SimBackend:
    """`count` simulated H200s; `set_load` changes what they are doing."""

    name = "sim"

    def __init__(
        self,
        node_id: str,
        count: int = 8,
        load: float | None = None,
        clock_us: Callable[[], int] = wall_clock_us,
        energy_offset_mj: int = 3_482_120,
    ) -> None:
        if not 1 <= count <= 64:
            raise ValueError(f"a simulated node has 1..64 GPUs, not {count}")
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._gpus = [
            _SimGpu(GpuInfo(i, sim_uuid(node_id, i), "NVIDIA H200", H200_MEMORY_BYTES, H200_POWER_LIMIT_MW))
            for i in range(count)
        ]
        for gpu in self._gpus:
            # Real counters start at whatever the driver accumulated since load.
            gpu.energy_mj = float(energy_offset_mj)
        if load is not None:
            self.set_load(load)

    def inventory(self) -> list[GpuInfo]:
        return [gpu.info for gpu in self._gpus]

    def set_load(self, load: float | None, index: int | None = None) -> None:
        """Load in [0, 1] (a process holds the GPU), or None (no process)."""
        if load is not None and not 0.0 <= load <= 1.0:
            raise ValueError(f"load must be within [0, 1], not {load}")
        with self._lock:
            for gpu in self._gpus if index is None else [self._gpus[index]]:
                gpu.advance(self._clock_us())
                gpu.load = load
                gpu.last_power_mw = gpu.power_mw()  # a load change is a step, not a ramp

    def reset_energy_counter(self, index: int) -> None:
        """What a driver reload does to the real counter."""
        with self._lock:
            self._gpus[index].energy_mj = 0.0

    def read(self, read_energy: bool) -> Reading:
        samples: list[GpuSample] = []
        energy: list[EnergyReading] = []
        with self._lock:
            for gpu in self._gpus:
                now = self._clock_us()
                power = gpu.advance(now)
                load = gpu.load or 0.0
                busy = gpu.load is not None
                samples.append(
                    GpuSample(
                        uuid=gpu.info.uuid,
                        timestamp_us=now,
                        power_mw=power,
                        gpu_util_percent=round(load * 100),
                        memory_util_percent=round(load * 60),
                        memory_used_bytes=BASE_MEMORY_BYTES + (int(load * 0.8 * H200_MEMORY_BYTES) if busy else 0),
                        temperature_c=30 + round(load * 45),
                        sm_clock_mhz=1980 if busy else 345,
                        throttle_reasons=0 if busy else 1,
                        processes=(GpuProcess(10_000 + gpu.info.index, int(load * 0.8 * H200_MEMORY_BYTES)),)
                        if busy
                        else (),
                        ecc_corrected_total=0,
                        ecc_uncorrected_total=0,
                    )
                )
                if read_energy:
                    energy.append(EnergyReading(gpu.info.uuid, now, int(gpu.energy_mj)))
        return Reading(samples=samples, energy=energy)

    def now_us(self) -> int:
        return self._clock_us()

    def close(self) -> None:
        logger.debug("sim backend closed")
