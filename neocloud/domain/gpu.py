"""What a GPU reports, as both sides see it: the agent reads these from a backend,
the scheduler's metering replays them from a trace.

Units are in the field names. `None` means "this GPU does not support the
field" (NVML's NotSupported), never zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    uuid: str
    model: str
    memory_total_bytes: int
    power_limit_mw: int


# The kernel nests PID namespaces at most 32 deep below the host's (MAX_PID_NS_LEVEL),
# so an NSpid chain has at most 33 entries.
MAX_NAMESPACE_PIDS = 33


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on a GPU. `pid` is in the host's PID namespace (as NVML
    reports it); `pid_namespace` is the inode of the process's own PID namespace
    and `namespace_pids` its NSpid chain, host's pid first and its own last
    (agent/gpu/pidns.py). 0: namespace unknown; (): identity unknown, so it may be anyone's."""

    pid: int
    used_memory_bytes: int
    pid_namespace: int = 0
    namespace_pids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class GpuSample:
    """The cheap fields of one GPU, read once per tick."""

    uuid: str
    timestamp_us: int
    power_mw: int | None = None
    gpu_util_percent: int | None = None
    memory_util_percent: int | None = None
    memory_used_bytes: int | None = None
    temperature_c: int | None = None
    sm_clock_mhz: int | None = None
    throttle_reasons: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    # `processes` is not known in full (NVML failed, or hides other PID namespaces): never "none left".
    processes_unavailable: bool = False
    ecc_corrected_total: int | None = None
    ecc_uncorrected_total: int | None = None


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """The driver's cumulative energy counter (mJ since driver load)."""

    uuid: str
    timestamp_us: int
    energy_mj: int
    counter_reset: bool = False


@dataclass(frozen=True, slots=True)
class PowerSample:
    """One entry of the driver's sub-second power buffer."""

    uuid: str
    timestamp_us: int
    power_mw: int


class HealthKind:
    """Mirrors neocloud.v1.HealthEventKind without importing protobuf here."""

    XID = 1
    ECC_UNCORRECTED = 2
    GPU_LOST = 3


@dataclass(frozen=True, slots=True)
class HealthEvent:
    uuid: str
    timestamp_us: int
    kind: int
    xid: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything one backend read returned."""

    samples: list[GpuSample] = field(default_factory=list)
    energy: list[EnergyReading] = field(default_factory=list)
    power_samples: list[PowerSample] = field(default_factory=list)
    events: list[HealthEvent] = field(default_factory=list)
