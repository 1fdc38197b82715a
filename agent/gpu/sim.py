"""Simulated GPUs shaped after the real H200 traces (docs/DESIGN.md section 5).

Power follows a load you set per GPU: ~77 W with no CUDA context, ~115 W idle
with a context, up to ~670 W flat out (700 W limit). The energy counter
integrates the reported power exactly (trapezoid between reads), so the
pipeline's conservation checks hold against it.

With `jobs=RayJobProcesses(node_id)` the load follows the neocloud jobs Ray
runs on this node instead: NVML would list their processes on their GPUs, so
the sim lists them too (real pids), and their GPUs draw the load the job's
environment names (NEOCLOUD_SIM_LOAD, else DEFAULT_JOB_LOAD). That makes the
scheduler's power, energy and "no process left" checks follow the schedule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from neocloud.agent.gpu.pidns import INIT_PID_NAMESPACE, ProcPids
from neocloud.domain.clock import wall_clock_us
from neocloud.domain.gpu import EnergyReading, GpuInfo, GpuProcess, GpuSample, Reading

logger = logging.getLogger(__name__)

H200_MEMORY_BYTES = 150_754_820_096
H200_POWER_LIMIT_MW = 700_000
IDLE_NO_CONTEXT_MW = 77_000
IDLE_WITH_CONTEXT_MW = 115_000
FLAT_OUT_MW = 670_000
BASE_MEMORY_BYTES = 644_939_776
NODE_LABEL = "neocloud.io/node-id"  # the Ray node label jobs are pinned by (scheduler/executor/types.py)
LOAD_ENV = "NEOCLOUD_SIM_LOAD"
DEFAULT_JOB_LOAD = 0.9
RAYLET_SEARCH_S = 5.0  # how often to look for this node's raylet while there is none

# GPU index -> the (pid, load) of each job process on it
JobProcesses = Callable[[], Mapping[int, Sequence[tuple[int, float]]]]


def sim_uuid(node_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{node_id}/{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class _SimGpu:
    def __init__(self, info: GpuInfo) -> None:
        self.info = info
        self.load: float | None = None  # set_load's
        self.job_load: float | None = None  # the jobs' while a job process is on the GPU
        self.rng = random.Random(info.uuid)
        self.energy_mj = 0.0
        self.last_t_us: int | None = None
        self.last_power_mw = IDLE_NO_CONTEXT_MW

    @property
    def effective_load(self) -> float | None:
        return self.job_load if self.job_load is not None else self.load

    def power_mw(self) -> int:
        load = self.effective_load
        if load is None:
            base = float(IDLE_NO_CONTEXT_MW)
        else:
            base = IDLE_WITH_CONTEXT_MW + load * (FLAT_OUT_MW - IDLE_WITH_CONTEXT_MW)
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

    def step(self, now_us: int, load: float | None = None, job_load: float | None = None) -> None:
        """A load change is a step at `now_us`, not a ramp since the last read."""
        self.advance(now_us)
        self.load, self.job_load = load, job_load
        self.last_power_mw = self.power_mw()


class RayJobProcesses:
    """The neocloud job processes on this node, found in procfs: descendants of
    the raylet labelled `neocloud.io/node-id=<node_id>` whose environment names a
    job (NEOCLOUD_JOB_ID, which the runner sets) and its GPUs (CUDA_VISIBLE_DEVICES
    as Ray's indices). `proc` is the procfs root, so tests can hand it a fake tree."""

    def __init__(self, node_id: str, proc: str | Path = "/proc") -> None:
        self._node_id = node_id
        self._proc = Path(proc)
        self._raylet: int | None = None
        self._next_search = 0.0

    def __call__(self) -> dict[int, list[tuple[int, float]]]:
        parents = self._parents()
        if self._raylet not in parents:
            self._raylet = None
            if time.monotonic() >= self._next_search:
                self._raylet = next((p for p in sorted(parents) if self._is_our_raylet(p)), None)
                self._next_search = time.monotonic() + RAYLET_SEARCH_S
        if self._raylet is None:
            return {}
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        found: dict[int, list[tuple[int, float]]] = {}
        todo = list(children.get(self._raylet, ()))
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, ()))
            env = self._environ(pid)
            if "NEOCLOUD_JOB_ID" not in env:
                continue
            load = _load(env.get(LOAD_ENV))
            for word in env.get("CUDA_VISIBLE_DEVICES", "").split(","):
                if word.strip().isdigit():
                    found.setdefault(int(word), []).append((pid, load))
        return found

    def _parents(self) -> dict[int, int]:
        """pid -> parent pid of every live process."""
        out = {}
        for entry in os.scandir(self._proc):
            if entry.name.isdigit():
                try:
                    stat = (self._proc / entry.name / "stat").read_text()
                    out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
                except (OSError, IndexError, ValueError):
                    continue  # gone since the listing
        return out

    def _is_our_raylet(self, pid: int) -> bool:
        try:
            argv = (self._proc / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
        if not argv or not argv[0].endswith("raylet"):
            return False
        for arg in argv:
            if arg.startswith("--labels="):
                try:
                    labels = json.loads(arg.removeprefix("--labels=") or "{}")
                except ValueError:
                    return False
                return isinstance(labels, dict) and labels.get(NODE_LABEL) == self._node_id
        return False

    def _environ(self, pid: int) -> dict[str, str]:
        try:
            raw = (self._proc / str(pid) / "environ").read_bytes()  # empty for a zombie
        except OSError:
            return {}
        pairs = (item.partition("=") for item in raw.decode(errors="replace").split("\0") if item)
        return {k: v for k, _, v in pairs}


def _processes(gpu: _SimGpu, procs: Sequence[tuple[int, float]], load: float, pids: ProcPids) -> tuple[GpuProcess, ...]:
    memory = int(load * 0.8 * H200_MEMORY_BYTES)
    if procs:
        # Found in this agent's procfs, which names their namespaces too.
        return pids.annotate(GpuProcess(pid, memory // len(procs)) for pid, _ in sorted(procs))
    # set_load has no real process to show: a made-up host process per GPU stands in
    pid = 10_000 + gpu.info.index
    return (GpuProcess(pid, memory, INIT_PID_NAMESPACE, (pid,)),) if gpu.load is not None else ()


def _load(text: str | None) -> float:
    try:
        value = float(text) if text is not None else DEFAULT_JOB_LOAD
    except ValueError:
        return DEFAULT_JOB_LOAD
    return min(max(value, 0.0), 1.0) if value == value else DEFAULT_JOB_LOAD  # NaN -> default


class SimBackend:
    """`count` simulated H200s; `set_load` changes what they are doing, or
    `jobs` (e.g. RayJobProcesses) says which processes use which GPU."""

    name = "sim"

    def __init__(
        self,
        node_id: str,
        count: int = 8,
        load: float | None = None,
        clock_us: Callable[[], int] = wall_clock_us,
        energy_offset_mj: int = 3_482_120,
        jobs: JobProcesses | None = None,
        proc_root: str | Path = "/proc",
    ) -> None:
        if not 1 <= count <= 64:
            raise ValueError(f"a simulated node has 1..64 GPUs, not {count}")
        self._clock_us = clock_us
        self._jobs = jobs
        self._pids = ProcPids(proc_root)
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
                gpu.step(self._clock_us(), load, gpu.job_load)

    def reset_energy_counter(self, index: int) -> None:
        """What a driver reload does to the real counter."""
        with self._lock:
            self._gpus[index].energy_mj = 0.0

    def read(self, read_energy: bool) -> Reading:
        samples: list[GpuSample] = []
        energy: list[EnergyReading] = []
        jobs = self._jobs() if self._jobs is not None else None
        with self._lock:
            for gpu in self._gpus:
                now = self._clock_us()
                procs = jobs.get(gpu.info.index, ()) if jobs is not None else ()
                job_load = max((load for _, load in procs), default=None)
                if job_load != gpu.job_load:  # a job started or ended on it
                    gpu.step(now, gpu.load, job_load)
                power = gpu.advance(now)
                load = gpu.effective_load or 0.0
                busy = gpu.effective_load is not None
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
                        processes=_processes(gpu, procs, load, self._pids),
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
