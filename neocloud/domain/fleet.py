"""The fleet as telemetry describes it: nodes with their stream position, GPUs with
their energy accumulators, and the energy cells metering attributes per (GPU,
owner, hour). Ingest keeps them live, the store persists them, metering reads them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from neocloud.v1 import telemetry_pb2 as pb

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EnergyAccumulator:
    last_mj: int | None = None
    last_us: int = 0
    total_mj: int = 0
    resets: int = 0

    def add(
        self,
        timestamp_us: int,
        energy_mj: int,
        counter_reset: bool,
        power_before_mw: int,
        power_after_mw: int,
        max_credit_mj: int | None = None,
        bridge: bool = True,
    ) -> bool:
        """Credit one reading. `max_credit_mj` caps what it may credit (ingest
        passes the rated power x span); `bridge=False` makes a reset bridge
        nothing (the new value becomes the baseline). True if the cap or a
        refused bridge cut the credit."""
        if self.last_mj is None:
            self.last_mj, self.last_us = energy_mj, timestamp_us
            return False
        if counter_reset or energy_mj < self.last_mj:
            # The counter restarted somewhere in between: what it counted since
            # is a lower bound, power over the span an estimate.
            span_s = max(0, timestamp_us - self.last_us) / 1e6
            estimate_mj = round((power_before_mw + power_after_mw) / 2 * span_s)
            wanted = max(energy_mj, estimate_mj)
            credit = wanted if bridge else 0
            self.resets += 1
        else:
            wanted = credit = energy_mj - self.last_mj
        if max_credit_mj is not None:
            credit = max(0, min(credit, max_credit_mj))
        if counter_reset or energy_mj < self.last_mj:
            logger.warning("energy counter reset bridged with %.1f J", credit / 1e3)
        self.total_mj += credit
        self.last_mj, self.last_us = energy_mj, timestamp_us
        return credit < wanted


@dataclass(slots=True)
class GpuState:
    node_id: str
    index: int
    uuid: str
    model: str
    memory_total_bytes: int
    power_limit_mw: int
    energy: EnergyAccumulator = field(default_factory=EnergyAccumulator)
    last_power_mw: int = 0
    last_series: pb.GpuSeries | None = None
    last_sample_us: int = 0
    xid_errors_total: int = 0
    unhealthy_reason: str | None = None
    # Reading times of the resets bridged lately (ingest rate-limits them; not persisted).
    bridged_resets_us: deque[int] = field(default_factory=deque)


@dataclass(slots=True)
class NodeState:
    node_id: str
    agent_version: str
    backend: str
    stream_epoch: int
    last_seq: int
    gpus: dict[str, GpuState]
    first_seen_us: int
    last_seen_us: int
    dropped_samples_total: int = 0
    durable_seq: int = 0
    connected: bool = False
    # (scheduler receive time - agent send time) of recent batches, µs.
    clock_offsets_us: deque[int] = field(default_factory=lambda: deque(maxlen=32))

    @property
    def clock_offset_s(self) -> float | None:
        """Lower envelope of receive - send: network delay only adds to it."""
        return min(self.clock_offsets_us) / 1e6 if self.clock_offsets_us else None


@dataclass(slots=True)
class Cell:
    """Increments for one (GPU, owner, hour)."""

    energy_mj: float = 0.0
    util_sum: int = 0
    util_count: int = 0
    peak_power_mw: int = 0
    memory_peak_bytes: int = 0

    def merge(self, other: Cell) -> None:
        self.energy_mj += other.energy_mj
        self.util_sum += other.util_sum
        self.util_count += other.util_count
        self.peak_power_mw = max(self.peak_power_mw, other.peak_power_mw)
        self.memory_peak_bytes = max(self.memory_peak_bytes, other.memory_peak_bytes)


CellKey = tuple[str, str, int]  # (GPU uuid, allocation id or IDLE_OWNER, hour)
