"""The fleet's live state as telemetry describes it: nodes, GPUs, their last
samples and health, and per-GPU energy accumulators.

Only validated batches reach `apply_batch`. Energy is accumulated from the
driver's cumulative counter, one delta between consecutive readings at a
time; a counter that went backwards (driver reload) is bridged with an
estimate from power, never billed as a negative or a huge number. Each
delta also goes to the attributor (metering/attribution.py), which splits it
by allocation.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from neocloud.scheduler.metering.attribution import Attributor
from neocloud.v1 import telemetry_pb2 as pb

logger = logging.getLogger(__name__)

# XIDs NVIDIA documents as needing a GPU reset or node drain.
CRITICAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})


@dataclass(slots=True)
class EnergyAccumulator:
    last_mj: int | None = None
    last_us: int = 0
    total_mj: int = 0
    resets: int = 0

    def add(
        self, timestamp_us: int, energy_mj: int, counter_reset: bool, power_before_mw: int, power_after_mw: int
    ) -> None:
        if self.last_mj is None:
            self.last_mj, self.last_us = energy_mj, timestamp_us
            return
        if counter_reset or energy_mj < self.last_mj:
            # The counter restarted somewhere in between: what it counted since
            # is a lower bound, power over the span an estimate.
            span_s = max(0, timestamp_us - self.last_us) / 1e6
            estimate_mj = round((power_before_mw + power_after_mw) / 2 * span_s)
            self.total_mj += max(energy_mj, estimate_mj)
            self.resets += 1
            logger.warning("energy counter reset bridged with %.1f J", max(energy_mj, estimate_mj) / 1e3)
        else:
            self.total_mj += energy_mj - self.last_mj
        self.last_mj, self.last_us = energy_mj, timestamp_us


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
class IngestCounters:
    batches_accepted: int = 0
    batches_duplicate: int = 0
    batches_rejected: int = 0
    samples: int = 0
    energy_readings: int = 0
    streams_refused: dict[str, int] = field(default_factory=dict)


class Fleet:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.gpu_owner: dict[str, str] = {}
        self.counters = IngestCounters()
        self.dirty_nodes: set[str] = set()
        self.dirty_gpus: set[str] = set()
        self.attributor = Attributor()

    def register(self, hello: pb.Hello, now_us: int) -> NodeState:
        """A node said hello: record (or update) it and its inventory."""
        node = self.nodes.get(hello.node_id)
        old_gpus = node.gpus if node else {}
        gpus = {}
        for g in hello.gpus:
            state = old_gpus.get(g.uuid) or GpuState(
                hello.node_id, g.index, g.uuid, g.model, g.memory_total_bytes, g.power_limit_mw
            )
            state.index, state.model = g.index, g.model
            state.memory_total_bytes, state.power_limit_mw = g.memory_total_bytes, g.power_limit_mw
            gpus[g.uuid] = state
            self.gpu_owner[g.uuid] = hello.node_id
        if node is None:
            node = NodeState(
                hello.node_id, hello.agent_version, hello.backend, hello.stream_epoch, 0, gpus, now_us, now_us
            )
            self.nodes[hello.node_id] = node
        else:
            if node.stream_epoch != hello.stream_epoch:
                logger.info("node %s started a new stream epoch %d (spool recreated)", node.node_id, hello.stream_epoch)
                node.stream_epoch, node.last_seq, node.durable_seq = hello.stream_epoch, 0, 0
            node.agent_version, node.backend, node.gpus, node.last_seen_us = (
                hello.agent_version,
                hello.backend,
                gpus,
                now_us,
            )
        self.dirty_nodes.add(node.node_id)
        self.dirty_gpus.update(gpus)
        return node

    def apply_batch(self, node: NodeState, batch: pb.Batch, received_us: int) -> None:
        counters = self.counters
        for series in batch.gpus:
            gpu = node.gpus[series.uuid]
            n = len(series.timestamp_us)
            if n:
                counters.samples += n
                gpu.last_series = series
                gpu.last_sample_us = series.timestamp_us[-1]
            if n or series.power_sample_us:
                self.attributor.on_series(gpu.uuid, series)
            if series.energy:
                power_now = series.power_mw[-1] if series.power_mw else gpu.last_power_mw
                acc = gpu.energy
                for e in series.energy:
                    first, total_before, t0_us = acc.last_mj is None, acc.total_mj, acc.last_us
                    acc.add(e.timestamp_us, e.energy_mj, e.counter_reset, gpu.last_power_mw, power_now)
                    if first:
                        self.attributor.on_first_reading(gpu.uuid, e.timestamp_us)
                    else:
                        self.attributor.on_delta(gpu.uuid, t0_us, e.timestamp_us, acc.total_mj - total_before)
                counters.energy_readings += len(series.energy)
                self.dirty_gpus.add(gpu.uuid)
            if series.power_mw:
                gpu.last_power_mw = series.power_mw[-1]
            if series.HasField("ecc_uncorrected_total") and series.ecc_uncorrected_total and not gpu.unhealthy_reason:
                self._mark_unhealthy(gpu, f"{series.ecc_uncorrected_total} uncorrected ECC errors")
        for event in batch.events:
            self._health_event(node.gpus[event.uuid], event)
        node.last_seq = batch.seq
        node.last_seen_us = received_us
        node.dropped_samples_total = batch.dropped_samples_total
        node.clock_offsets_us.append(received_us - batch.agent_time_us)
        counters.batches_accepted += 1
        self.dirty_nodes.add(node.node_id)

    def _health_event(self, gpu: GpuState, event: pb.HealthEvent) -> None:
        if event.kind == pb.HEALTH_EVENT_KIND_XID:
            gpu.xid_errors_total += 1
            if event.xid in CRITICAL_XIDS:
                self._mark_unhealthy(gpu, f"XID {event.xid} {event.detail}".strip())
        elif event.kind == pb.HEALTH_EVENT_KIND_ECC_UNCORRECTED:
            self._mark_unhealthy(gpu, f"uncorrected ECC error {event.detail}".strip())
        elif event.kind == pb.HEALTH_EVENT_KIND_GPU_LOST:
            self._mark_unhealthy(gpu, "GPU fell off the bus")
        self.dirty_gpus.add(gpu.uuid)

    @staticmethod
    def _mark_unhealthy(gpu: GpuState, reason: str) -> None:
        if gpu.unhealthy_reason is None:
            logger.error("GPU %s on %s is unhealthy: %s", gpu.uuid, gpu.node_id, reason)
            gpu.unhealthy_reason = reason
