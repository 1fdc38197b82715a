"""Validation of telemetry messages, before anything is applied.

Each check returns a reason a person can act on, or None. A batch that fails
is acknowledged as rejected and changes nothing but the stream position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from neocloud.domain.fleet import NodeState
from neocloud.domain.gpu import MAX_NAMESPACE_PIDS
from neocloud.scheduler.ingest import bounds, rated
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.wire.tls import validate_node_id

MAX_GPUS_PER_NODE = 64
MAX_SAMPLES_PER_SERIES = 100_000
HARD_POWER_CAP_MW = 5_000_000  # no GPU draws 5 kW
MAX_ENERGY_MJ = 2**62
# Samples may not be stamped later than the batch that carries them.
CLOCK_SLACK_US = 5_000_000
# A counter may not rise faster than twice the model's rated power allows (plus 1 J);
# the credit is cut to rated.SLACK x rated power anyway (fleet.py).
ENERGY_RATE_FACTOR = 2
_VERSION = re.compile(r"^[\w.+-]{1,64}$")

# Bounds (bounds.py) that no plausibility check below implies, read from its table.
# tests/unit/test_bounds.py sets every field of a batch just outside its declared
# range and expects the batch refused: a bound tightened in the table and not
# checked here fails it.
_EPOCH_HI = bounds.BOUNDS["Batch"]["stream_epoch"][1]
_SEQ_HI = bounds.BOUNDS["Batch"]["seq"][1]
_SEALED_LO = bounds.BOUNDS["Batch"]["agent_time_us"][0]
_DROPPED_HI = bounds.BOUNDS["Batch"]["dropped_samples_total"][1]
_MEMORY_USED_HI = bounds.BOUNDS["GpuSeries"]["memory_used_bytes"][1]
_THROTTLE_HI = bounds.BOUNDS["GpuSeries"]["throttle_reasons"][1]
_ECC_CORRECTED_HI = bounds.BOUNDS["GpuSeries"]["ecc_corrected_total"][1]
_ECC_UNCORRECTED_HI = bounds.BOUNDS["GpuSeries"]["ecc_uncorrected_total"][1]
_PROCESS_MEMORY_HI = bounds.BOUNDS["GpuProcess"]["used_memory_bytes"][1]
_PID_NAMESPACE_HI = bounds.BOUNDS["GpuProcess"]["pid_namespace"][1]
_EVENT_TIME_LO = bounds.BOUNDS["HealthEvent"]["timestamp_us"][0]
_OUT_OF_RANGE = "a value is outside its declared range (bounds.py)"
_EVENT_KINDS = frozenset(pb.HealthEventKind.values()) - {pb.HEALTH_EVENT_KIND_UNSPECIFIED}


def validate_hello(hello: pb.Hello) -> str | None:
    try:
        validate_node_id(hello.node_id)
    except ValueError as e:
        return str(e)
    if not _VERSION.match(hello.agent_version):
        return f"agent version {hello.agent_version[:64]!r} is not a version string"
    if hello.stream_epoch == 0:
        return "stream_epoch must be non-zero"
    # Every integer within its declared range (bounds.py): SQLite holds no more than 2^63 - 1.
    if reason := bounds.check(hello):
        return reason
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
        if not 0 < g.power_limit_mw <= HARD_POWER_CAP_MW:
            return f"GPU {g.index}: power_limit_mw {g.power_limit_mw} is absurd (must be 1-{HARD_POWER_CAP_MW} mW)"
    return None


def validate_position(batch: pb.Batch) -> str | None:
    """The batch's place in its stream, checked before it is used: a seq the store
    cannot hold can be neither stored nor acknowledged, so it ends the stream."""
    return bounds.check_field(batch, "stream_epoch") or bounds.check_field(batch, "seq")


def validate_batch(batch: pb.Batch, node: NodeState) -> str | None:
    reason = _check_batch(batch, node)
    # The one pass below only has to notice a value outside its declared range; such
    # a value is then named as bounds.py names it, before any plausibility reason.
    return None if reason is None else bounds.check(batch) or reason


def _check_batch(batch: pb.Batch, node: NodeState) -> str | None:
    sealed_us = batch.agent_time_us
    if (
        batch.stream_epoch > _EPOCH_HI
        or batch.seq > _SEQ_HI
        or sealed_us < _SEALED_LO
        or batch.dropped_samples_total > _DROPPED_HI
    ):
        return _OUT_OF_RANGE
    for series in batch.gpus:
        uuid = series.uuid
        gpu = node.gpus.get(uuid)
        if gpu is None:
            return f"GPU {uuid[:96]!r} is not in this node's inventory"
        reason = _check_series(series, gpu.power_limit_mw, gpu.memory_total_bytes, sealed_us, gpu.last_sample_us)
        if reason is None and (energy := series.energy):
            reason = _check_energy(energy, gpu.model, gpu.energy.last_mj, gpu.energy.last_us)
        if reason is not None:
            return f"GPU {uuid}: {reason}"
    for event in batch.events:
        if event.uuid not in node.gpus:
            return f"health event for GPU {event.uuid[:96]!r}, which is not in this node's inventory"
        if event.timestamp_us < _EVENT_TIME_LO:
            return _OUT_OF_RANGE
        if event.kind not in _EVENT_KINDS:
            return f"health event of unknown kind {event.kind}"
        if len(event.detail) > 1024:
            return "health event detail is longer than 1024 characters"
    return None


def _check_series(series: pb.GpuSeries, limit_mw: int, memory_bytes: int, sealed_us: int, last_us: int) -> str | None:
    # Each column is copied out once as a list: on upb a slice is one C call, while
    # iterating the container (min, max, map) builds its ints one by one at ~3x the
    # cost, and this runs for every GPU of every batch.
    ts = series.timestamp_us[:]
    n = len(ts)
    if n > MAX_SAMPLES_PER_SERIES:
        return f"{n} samples in one batch (max {MAX_SAMPLES_PER_SERIES})"
    power = series.power_mw[:]
    gpu_util = series.gpu_util_percent[:]
    mem_util = series.memory_util_percent[:]
    mem_used = series.memory_used_bytes[:]
    temperature = series.temperature_c[:]
    clock = series.sm_clock_mhz[:]
    throttle = series.throttle_reasons[:]
    for column, values in (
        ("power_mw", power),
        ("gpu_util_percent", gpu_util),
        ("memory_util_percent", mem_util),
        ("memory_used_bytes", mem_used),
        ("temperature_c", temperature),
        ("sm_clock_mhz", clock),
        ("throttle_reasons", throttle),
    ):
        if values and len(values) != n:
            return f"column {column} has {len(values)} values for {n} timestamps"
    buffered_us = series.power_sample_us[:]
    buffered_mw = series.power_sample_mw[:]
    if len(buffered_us) != len(buffered_mw):
        return "power buffer timestamps and values differ in length"
    # Times are positive and never go backwards, so no time is below its bound (0).
    if n:
        if ts[0] <= 0 or ts[0] < last_us:
            return f"sample time {ts[0]} is before the previous batch's last sample ({last_us})"
        if ts[-1] > sealed_us + CLOCK_SLACK_US:
            return "samples are stamped after the batch was sealed"
        if n > 1 and ts != sorted(ts):
            return "sample timestamps go backwards"
    if buffered_us:
        if buffered_us[0] <= 0 or buffered_us[-1] > sealed_us + CLOCK_SLACK_US:
            return "power buffer samples are stamped before 1970 or after the batch was sealed"
        if buffered_us != sorted(buffered_us):
            return "power buffer timestamps go backwards"
    power_cap = min(HARD_POWER_CAP_MW, 2 * limit_mw) if limit_mw else HARD_POWER_CAP_MW
    if power and max(power) > power_cap:
        return f"power {max(power)} mW is beyond twice the {limit_mw} mW limit"
    if buffered_mw and max(buffered_mw) > power_cap:
        return f"buffered power {max(buffered_mw)} mW is beyond twice the {limit_mw} mW limit"
    if gpu_util and max(gpu_util) > 100:
        return "GPU utilisation above 100%"
    if mem_util and max(mem_util) > 100:
        return "memory utilisation above 100%"
    if mem_used and max(mem_used) > min(memory_bytes or _MEMORY_USED_HI, _MEMORY_USED_HI):
        return f"memory used {max(mem_used)} B exceeds the GPU's {memory_bytes} B"
    if temperature and not -40 <= min(temperature) <= max(temperature) <= 150:
        return "temperature outside -40..150 °C"
    if clock and max(clock) > 10_000:
        return "SM clock above 10 GHz"
    if (
        (throttle and max(throttle) > _THROTTLE_HI)
        or series.ecc_corrected_total > _ECC_CORRECTED_HI
        or series.ecc_uncorrected_total > _ECC_UNCORRECTED_HI
    ):
        return _OUT_OF_RANGE
    process_memory_cap = min(memory_bytes or _PROCESS_MEMORY_HI, _PROCESS_MEMORY_HI)
    for proc in series.processes:
        if proc.pid == 0 or proc.used_memory_bytes > process_memory_cap:
            return f"process {proc.pid} is not a plausible GPU process"
        # A chain starts from the host's pid NVML reported (agent/gpu/pidns.py); a namespace comes with one.
        chain = proc.namespace_pids
        namespace = proc.pid_namespace
        if namespace > _PID_NAMESPACE_HI:
            return _OUT_OF_RANGE
        if chain:
            if chain[0] != proc.pid or len(chain) > MAX_NAMESPACE_PIDS or 0 in chain:
                return f"process {proc.pid}: NSpid {list(chain[:4])} is impossible"
        elif namespace:
            return f"process {proc.pid}: PID namespace {namespace} without its NSpid"
    return None


def _check_energy(energy: Iterable[pb.EnergyReading], model: str, last_mj: int | None, last_us: int) -> str | None:
    # The bound is the model's rated power (rated.py), never the limit the node reports.
    limit_mw = rated.bound_mw(model)
    for e in energy:
        if e.energy_mj >= MAX_ENERGY_MJ:
            return f"energy counter {e.energy_mj} mJ is absurd"
        # last_us is 0 or a reading's accepted time, so no time below its bound (0) gets past this.
        if e.timestamp_us < last_us:
            return f"energy reading at {e.timestamp_us} is older than the last one ({last_us})"
        if last_mj is not None and not e.counter_reset and e.energy_mj >= last_mj:
            span_s = (e.timestamp_us - last_us) / 1e6
            allowed_mj = ENERGY_RATE_FACTOR * limit_mw * span_s + 1000
            if e.energy_mj - last_mj > allowed_mj:
                return (
                    f"energy counter rose {(e.energy_mj - last_mj) / 1e3:.0f} J in {span_s:.3f} s, "
                    f"more than twice the power limit allows ({model[:96]}: rated {limit_mw / 1e3:.0f} W)"
                )
        last_mj, last_us = e.energy_mj, e.timestamp_us
    return None
