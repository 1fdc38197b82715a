"""Validation of telemetry messages, before anything is applied.

Each check returns a reason a person can act on, or None. A batch that fails
is acknowledged as rejected and changes nothing but the stream position.
"""

from __future__ import annotations

import re

from neocloud.scheduler.ingest.fleet import NodeState
from neocloud.v1 import telemetry_pb2 as pb

MAX_GPUS_PER_NODE = 64
MAX_SAMPLES_PER_SERIES = 100_000
HARD_POWER_CAP_MW = 5_000_000  # no GPU draws 5 kW
MAX_ENERGY_MJ = 2**62
# Samples may not be stamped later than the batch that carries them.
CLOCK_SLACK_US = 5_000_000
# A counter may not rise faster than twice the power limit allows (plus 1 J).
ENERGY_RATE_FACTOR = 2
_VERSION = re.compile(r"^[\w.+-]{1,64}$")
_NODE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_COLUMNS = (
    "power_mw",
    "gpu_util_percent",
    "memory_util_percent",
    "memory_used_bytes",
    "temperature_c",
    "sm_clock_mhz",
    "throttle_reasons",
)


def validate_hello(hello: pb.Hello) -> str | None:
    if not _NODE_ID.match(hello.node_id):
        return f"node id {hello.node_id[:64]!r} must be 1-128 of [A-Za-z0-9._-], not starting with '.' or '-'"
    if not _VERSION.match(hello.agent_version):
        return f"agent version {hello.agent_version[:64]!r} is not a version string"
    if hello.stream_epoch == 0:
        return "stream_epoch must be non-zero"
    if hello.backend not in ("nvml", "sim", "replay"):
        return f"backend {hello.backend[:32]!r} must be nvml, sim or replay"
    if not 1 <= len(hello.gpus) <= MAX_GPUS_PER_NODE:
        return f"a node reports 1-{MAX_GPUS_PER_NODE} GPUs, not {len(hello.gpus)}"
    uuids = [g.uuid for g in hello.gpus]
    if len(set(uuids)) != len(uuids) or len({g.index for g in hello.gpus}) != len(uuids):
        return "GPU UUIDs and indices must be unique within a node"
    for g in hello.gpus:
        if not g.uuid.startswith(("GPU-", "MIG-")) or len(g.uuid) > 96:
            return f"GPU {g.index}: uuid {g.uuid[:96]!r} is not an NVML UUID"
        if not g.model or len(g.model) > 96:
            return f"GPU {g.index}: model name must be 1-96 characters"
        if g.power_limit_mw > HARD_POWER_CAP_MW:
            return f"GPU {g.index}: power limit {g.power_limit_mw} mW is absurd"
    return None


def validate_batch(batch: pb.Batch, node: NodeState) -> str | None:
    for series in batch.gpus:
        gpu = node.gpus.get(series.uuid)
        if gpu is None:
            return f"GPU {series.uuid[:96]!r} is not in this node's inventory"
        reason = _check_series(series, gpu.power_limit_mw, gpu.memory_total_bytes, batch.agent_time_us, gpu.last_sample_us)
        if reason is None:
            reason = _check_energy(series, gpu.power_limit_mw, gpu.energy.last_mj, gpu.energy.last_us)
        if reason is not None:
            return f"GPU {series.uuid}: {reason}"
    for event in batch.events:
        if event.uuid not in node.gpus:
            return f"health event for GPU {event.uuid[:96]!r}, which is not in this node's inventory"
        if event.kind not in pb.HealthEventKind.values() or event.kind == pb.HEALTH_EVENT_KIND_UNSPECIFIED:
            return f"health event of unknown kind {event.kind}"
        if len(event.detail) > 1024:
            return "health event detail is longer than 1024 characters"
    return None


def _check_series(series: pb.GpuSeries, limit_mw: int, memory_bytes: int, sealed_us: int, last_us: int) -> str | None:
    ts = series.timestamp_us
    n = len(ts)
    if n > MAX_SAMPLES_PER_SERIES:
        return f"{n} samples in one batch (max {MAX_SAMPLES_PER_SERIES})"
    for column in _COLUMNS:
        length = len(getattr(series, column))
        if length not in (0, n):
            return f"column {column} has {length} values for {n} timestamps"
    if len(series.power_sample_us) != len(series.power_sample_mw):
        return "power buffer timestamps and values differ in length"
    if n:
        if ts[0] <= 0 or ts[0] < last_us:
            return f"sample time {ts[0]} is before the previous batch's last sample ({last_us})"
        if ts[-1] > sealed_us + CLOCK_SLACK_US:
            return "samples are stamped after the batch was sealed"
        if n > 1 and any(b < a for a, b in zip(ts, ts[1:])):
            return "sample timestamps go backwards"
    power_cap = min(HARD_POWER_CAP_MW, 2 * limit_mw) if limit_mw else HARD_POWER_CAP_MW
    if series.power_mw and max(series.power_mw) > power_cap:
        return f"power {max(series.power_mw)} mW is beyond twice the {limit_mw} mW limit"
    if series.power_sample_mw and max(series.power_sample_mw) > power_cap:
        return f"buffered power {max(series.power_sample_mw)} mW is beyond twice the {limit_mw} mW limit"
    if series.gpu_util_percent and max(series.gpu_util_percent) > 100:
        return "GPU utilisation above 100%"
    if series.memory_util_percent and max(series.memory_util_percent) > 100:
        return "memory utilisation above 100%"
    if series.memory_used_bytes and memory_bytes and max(series.memory_used_bytes) > memory_bytes:
        return f"memory used {max(series.memory_used_bytes)} B exceeds the GPU's {memory_bytes} B"
    if series.temperature_c and not -40 <= min(series.temperature_c) <= max(series.temperature_c) <= 150:
        return "temperature outside -40..150 °C"
    if series.sm_clock_mhz and max(series.sm_clock_mhz) > 10_000:
        return "SM clock above 10 GHz"
    for proc in series.processes:
        if proc.pid == 0 or (memory_bytes and proc.used_memory_bytes > memory_bytes):
            return f"process {proc.pid} is not a plausible GPU process"
    return None


def _check_energy(series: pb.GpuSeries, limit_mw: int, last_mj: int | None, last_us: int) -> str | None:
    for e in series.energy:
        if e.energy_mj >= MAX_ENERGY_MJ:
            return f"energy counter {e.energy_mj} mJ is absurd"
        if e.timestamp_us < last_us:
            return f"energy reading at {e.timestamp_us} is older than the last one ({last_us})"
        if last_mj is not None and not e.counter_reset and e.energy_mj >= last_mj and limit_mw:
            span_s = (e.timestamp_us - last_us) / 1e6
            allowed_mj = ENERGY_RATE_FACTOR * limit_mw * span_s + 1000
            if e.energy_mj - last_mj > allowed_mj:
                return (
                    f"energy counter rose {(e.energy_mj - last_mj) / 1e3:.0f} J in {span_s:.3f} s, "
                    f"more than twice the power limit allows"
                )
        last_mj, last_us = e.energy_mj, e.timestamp_us
    return None
