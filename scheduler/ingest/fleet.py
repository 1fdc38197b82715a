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
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from neocloud.domain.fleet import GpuState, NodeState
from neocloud.scheduler.ingest import rated
from neocloud.scheduler.metering.attribution import Attributor
from neocloud.scheduler.store import telemetry as telemetry_store
from neocloud.scheduler.store.telemetry import Snapshot
from neocloud.v1 import telemetry_pb2 as pb

logger = logging.getLogger(__name__)

# XIDs NVIDIA documents as needing a GPU reset or node drain.
CRITICAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140})


@dataclass(slots=True)
class IngestCounters:
    batches_accepted: int = 0
    batches_duplicate: int = 0
    batches_rejected: int = 0
    samples: int = 0
    energy_readings: int = 0
    # Readings whose credit the rated-power cap or the reset rate limit cut (rated.py).
    energy_capped: int = 0
    streams_refused: dict[str, int] = field(default_factory=dict)
    # Hellos refused because they named a GPU another node registered first.
    gpu_claims_refused: int = 0


class Fleet:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.gpu_owner: dict[str, str] = {}
        self.counters = IngestCounters()
        self.dirty_nodes: set[str] = set()
        self.dirty_gpus: set[str] = set()
        self.attributor = Attributor()

    @classmethod
    def load(cls, db: sqlite3.Connection) -> Fleet:
        """The fleet as last committed, with the energy acknowledged before a restart
        but not yet attributed handed back to the attributor."""
        fleet = cls()
        nodes, marks = telemetry_store.load(db)
        for node in nodes.values():
            fleet._adopt(node, marks)
        return fleet

    def _adopt(self, node: NodeState, marks: dict[str, tuple[int, float]]) -> None:
        """Take a node as the store has it."""
        self.nodes[node.node_id] = node
        for uuid, gpu in node.gpus.items():
            self.gpu_owner[uuid] = node.node_id
            acc = gpu.energy
            if acc.last_mj is None:
                continue
            # The unattributed rest is one span from the watermark to the last reading
            # (split by duration at any boundary inside it: its samples are gone).
            t0_us, attributed_mj = marks.get(uuid, (node.first_seen_us, 0.0))
            self.attributor.restore(uuid, attributed_mj, t0_us, acc.last_us, acc.total_mj - attributed_mj)
            if acc.total_mj > attributed_mj:
                logger.info(
                    "GPU %s: %.1f J acknowledged before the restart to attribute",
                    uuid,
                    (acc.total_mj - attributed_mj) / 1e3,
                )

    def reset_node(self, node_id: str, committed: NodeState | None, marks: dict[str, tuple[int, float]]) -> None:
        """The store refused this node's data: forget everything it sent since its
        last commit and go back to the committed state (`committed`, None if the
        node was never committed), so that nothing of it poisons a later commit."""
        old = self.nodes.pop(node_id, None)
        self.dirty_nodes.discard(node_id)
        for uuid in old.gpus if old else ():
            if self.gpu_owner.get(uuid) == node_id:
                del self.gpu_owner[uuid]
            self.attributor.forget(uuid)
            self.dirty_gpus.discard(uuid)
        if committed is not None:
            for uuid in committed.gpus:
                self.attributor.forget(uuid)
            self._adopt(committed, marks)

    def snapshot_dirty(self) -> Snapshot:
        """What changed since the last snapshot, copied out so the write can run in
        another thread while ingest goes on."""
        nodes = []
        seqs = {}
        for node_id in self.dirty_nodes:
            n = self.nodes[node_id]
            nodes.append(
                (
                    n.node_id,
                    n.agent_version,
                    n.backend,
                    n.stream_epoch,
                    n.last_seq,
                    n.dropped_samples_total,
                    n.first_seen_us,
                    n.last_seen_us,
                )
            )
            seqs[node_id] = (n.stream_epoch, n.last_seq)
        gpus = []
        for uuid in self.dirty_gpus:
            node = self.nodes.get(self.gpu_owner.get(uuid, ""))
            g = node.gpus.get(uuid) if node else None
            if g is None:
                continue
            e = g.energy
            gpus.append(
                (
                    g.uuid, g.node_id, g.index, g.model, g.memory_total_bytes, g.power_limit_mw,
                    e.last_mj, e.last_us, e.total_mj, e.resets, g.last_power_mw, g.xid_errors_total, g.unhealthy_reason,
                )
            )  # fmt: skip
        self.dirty_nodes.clear()
        self.dirty_gpus.clear()
        self.attributor.flush()
        cells, marks = self.attributor.take()
        return Snapshot(nodes, gpus, seqs, cells, marks)

    def restore(self, snap: Snapshot) -> None:
        """A commit failed: what it carried is written with the next one instead."""
        self.dirty_nodes.update(snap.seqs)
        self.dirty_gpus.update(str(row[0]) for row in snap.gpus)
        self.attributor.give_back(dict(snap.cells), dict(snap.watermarks))

    def register(self, hello: pb.Hello, now_us: int) -> NodeState:
        """A node said hello: record (or update) it and its inventory."""
        node = self.nodes.get(hello.node_id)
        old_gpus = node.gpus if node else {}
        gpus = {}
        for g in hello.gpus:
            state = old_gpus.get(g.uuid) or GpuState(
                hello.node_id, g.index, g.uuid, g.model, g.memory_total_bytes, g.power_limit_mw
            )
            if g.model != state.model:
                # The rated-power cap follows the model; a GPU does not change model, so a node
                # cannot raise its own cap by renaming one (threat f).
                logger.warning(
                    "node %s names GPU %s a %r; it was registered as %r, which stays",
                    hello.node_id, g.uuid, g.model[:96], state.model,
                )  # fmt: skip
            state.index = g.index
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
        attributor = self.attributor
        for series in batch.gpus:
            gpu = node.gpus[series.uuid]
            # Each field is read once: on upb every access builds a wrapper, and this
            # runs for every GPU of every batch.
            ts, power = series.timestamp_us, series.power_mw
            n = len(ts)
            if n:
                counters.samples += n
                gpu.last_series = series
                gpu.last_sample_us = ts[-1]
            if n or series.power_sample_us:
                attributor.on_series(gpu.uuid, series)
            power_now = power[-1] if power else gpu.last_power_mw
            if energy := series.energy:
                self._apply_energy(gpu, energy, power_now)
                counters.energy_readings += len(energy)
                self.dirty_gpus.add(gpu.uuid)
            gpu.last_power_mw = power_now
            if (ecc := series.ecc_uncorrected_total) and not gpu.unhealthy_reason:
                self._mark_unhealthy(gpu, f"{ecc} uncorrected ECC errors")
        for event in batch.events:
            self._health_event(node.gpus[event.uuid], event)
        node.last_seq = batch.seq
        node.last_seen_us = received_us
        node.dropped_samples_total = batch.dropped_samples_total
        node.clock_offsets_us.append(received_us - batch.agent_time_us)
        counters.batches_accepted += 1
        self.dirty_nodes.add(node.node_id)

    def _apply_energy(self, gpu: GpuState, energy: Iterable[pb.EnergyReading], power_now: int) -> None:
        acc = gpu.energy
        for e in energy:
            t_us, energy_mj, counter_reset = e.timestamp_us, e.energy_mj, e.counter_reset
            first, total_before, t0_us = acc.last_mj is None, acc.total_mj, acc.last_us
            bridge = True
            if not first and (counter_reset or energy_mj < acc.last_mj):  # type: ignore[operator]
                bridge = self._may_bridge(gpu, t_us)
            cap = rated.max_credit_mj(gpu.model, t_us - t0_us)
            if acc.add(t_us, energy_mj, counter_reset, gpu.last_power_mw, power_now, cap, bridge):
                self.counters.energy_capped += 1
                logger.warning(
                    "GPU %s on %s: energy credit cut to the %s's rated power x span (or a reset past the rate limit)",
                    gpu.uuid,
                    gpu.node_id,
                    gpu.model[:96],
                )
            if first:
                self.attributor.on_first_reading(gpu.uuid, t_us)
            else:
                self.attributor.on_delta(gpu.uuid, t0_us, t_us, acc.total_mj - total_before)

    @staticmethod
    def _may_bridge(gpu: GpuState, t_us: int) -> bool:
        """At most MAX_BRIDGED_RESETS_PER_HOUR resets of one GPU bridge a gap per hour."""
        recent = gpu.bridged_resets_us
        while recent and recent[0] <= t_us - rated.HOUR_US:
            recent.popleft()
        if len(recent) >= rated.MAX_BRIDGED_RESETS_PER_HOUR:
            return False
        recent.append(t_us)
        return True

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
