"""Persists the telemetry side of the fleet: nodes with their stream position,
GPUs with their energy accumulators. A commit is what makes an ack true."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from neocloud.scheduler.ingest.fleet import EnergyAccumulator, Fleet, GpuState, NodeState
from neocloud.scheduler.metering.attribution import Cell, CellKey
from neocloud.scheduler.metering.samples import unpack
from neocloud.scheduler.metering.split import CounterReading, PowerCurve, counter_deltas

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Rows to write, copied out of the live state so the write can run in
    another thread while ingest goes on."""

    nodes: Sequence[tuple[object, ...]]
    gpus: Sequence[tuple[object, ...]]
    seqs: dict[str, tuple[int, int]]  # node -> (stream epoch, last seq)
    readings: Sequence[tuple[str, int, int, int]] = ()
    samples: Sequence[tuple[str, int, int, bytes, bytes]] = ()
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.nodes or self.gpus or self.readings or self.samples or self.cells or self.watermarks)


def snapshot_dirty(fleet: Fleet) -> Snapshot:
    nodes = []
    seqs = {}
    for node_id in fleet.dirty_nodes:
        n = fleet.nodes[node_id]
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
    for uuid in fleet.dirty_gpus:
        node = fleet.nodes.get(fleet.gpu_owner.get(uuid, ""))
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
    fleet.dirty_nodes.clear()
    fleet.dirty_gpus.clear()
    readings, fleet.pending_readings = fleet.pending_readings, []
    samples, fleet.pending_samples = fleet.pending_samples, []
    fleet.attributor.flush()
    cells, marks = fleet.attributor.take()
    return Snapshot(nodes, gpus, seqs, readings, samples, cells, marks)


def restore(fleet: Fleet, snap: Snapshot) -> None:
    """A commit failed: what it carried is written with the next one instead."""
    fleet.dirty_nodes.update(snap.seqs)
    fleet.dirty_gpus.update(str(row[0]) for row in snap.gpus)
    fleet.pending_readings[:0] = snap.readings
    fleet.pending_samples[:0] = snap.samples
    fleet.attributor.give_back(dict(snap.cells), dict(snap.watermarks))


def write(db: sqlite3.Connection, snap: Snapshot) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(
            "INSERT INTO nodes (node_id, agent_version, backend, stream_epoch, last_seq, dropped_samples_total,"
            " first_seen_us, last_seen_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (node_id) DO UPDATE SET agent_version = excluded.agent_version,"
            " backend = excluded.backend, stream_epoch = excluded.stream_epoch, last_seq = excluded.last_seq,"
            " dropped_samples_total = excluded.dropped_samples_total, last_seen_us = excluded.last_seen_us",
            snap.nodes,
        )
        db.executemany(
            "INSERT OR REPLACE INTO gpus (uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw,"
            " energy_last_mj, energy_last_us, energy_total_mj, energy_resets, last_power_mw, xid_errors_total,"
            " unhealthy_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            snap.gpus,
        )
        db.executemany(
            "INSERT OR IGNORE INTO energy_readings (uuid, t_us, energy_mj, counter_reset) VALUES (?, ?, ?, ?)",
            snap.readings,
        )
        db.executemany(
            "INSERT OR IGNORE INTO gpu_samples (uuid, t_first_us, t_last_us, ticks, power_buffer)"
            " VALUES (?, ?, ?, ?, ?)",
            snap.samples,
        )
        db.executemany(
            "INSERT INTO meter_cells (uuid, owner, hour, energy_mj, util_sum, util_count, peak_power_mw,"
            " memory_peak_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uuid, owner, hour) DO UPDATE SET"
            " energy_mj = energy_mj + excluded.energy_mj, util_sum = util_sum + excluded.util_sum,"
            " util_count = util_count + excluded.util_count,"
            " peak_power_mw = MAX(peak_power_mw, excluded.peak_power_mw),"
            " memory_peak_bytes = MAX(memory_peak_bytes, excluded.memory_peak_bytes)",
            [
                (uuid, owner, hour, c.energy_mj, c.util_sum, c.util_count, c.peak_power_mw, c.memory_peak_bytes)
                for (uuid, owner, hour), c in snap.cells.items()
            ],
        )
        db.executemany(
            "INSERT OR REPLACE INTO meter_watermarks (uuid, attributed_to_us) VALUES (?, ?)", snap.watermarks.items()
        )
        # The ledger re-meters every hour that changed.
        db.executemany(
            "INSERT OR IGNORE INTO meter_dirty (hour) VALUES (?)", [(h,) for h in {k[2] for k in snap.cells}]
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def load(db: sqlite3.Connection) -> Fleet:
    fleet = Fleet()
    for row in db.execute(
        "SELECT node_id, agent_version, backend, stream_epoch, last_seq, dropped_samples_total,"
        " first_seen_us, last_seen_us FROM nodes"
    ):
        node = NodeState(row[0], row[1], row[2], row[3], row[4], {}, row[6], row[7], dropped_samples_total=row[5])
        node.durable_seq = node.last_seq
        fleet.nodes[node.node_id] = node
    for row in db.execute(
        "SELECT uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw, energy_last_mj,"
        " energy_last_us, energy_total_mj, energy_resets, last_power_mw, xid_errors_total, unhealthy_reason FROM gpus"
    ):
        gpu = GpuState(
            node_id=row[1],
            index=row[2],
            uuid=row[0],
            model=row[3],
            memory_total_bytes=row[4],
            power_limit_mw=row[5],
            energy=EnergyAccumulator(row[6], row[7], row[8], row[9]),
            last_power_mw=row[10],
            xid_errors_total=row[11],
            unhealthy_reason=row[12],
        )
        fleet.nodes[gpu.node_id].gpus[gpu.uuid] = gpu
        fleet.gpu_owner[gpu.uuid] = gpu.node_id
    _restore_unattributed(db, fleet)
    return fleet


def _restore_unattributed(db: sqlite3.Connection, fleet: Fleet) -> None:
    """Energy acknowledged before a restart but not yet attributed: rebuild its spans
    from the stored counter readings, past each GPU's watermark."""
    marks = dict(db.execute("SELECT uuid, attributed_to_us FROM meter_watermarks").fetchall())
    for node in fleet.nodes.values():
        for uuid in node.gpus:
            mark = marks.get(uuid, -1)
            readings = [
                CounterReading(t / 1e6, mj / 1e3, bool(reset))
                for t, mj, reset in db.execute(
                    "SELECT t_us, energy_mj, counter_reset FROM energy_readings WHERE uuid = ? AND t_us >= ?"
                    " ORDER BY t_us",
                    (uuid, mark),
                )
            ]
            if not readings:
                continue
            fleet.attributor.on_first_reading(uuid, round(readings[0].t * 1e6))
            if len(readings) < 2:
                continue
            power = [
                unpack(ticks, buffer)
                for ticks, buffer in db.execute(
                    "SELECT ticks, power_buffer FROM gpu_samples WHERE uuid = ? AND t_last_us >= ? ORDER BY t_first_us",
                    (uuid, round(readings[0].t * 1e6)),
                )
            ]
            curve = PowerCurve(
                [(t / 1e6, w / 1e3) for s in power for t, w in zip(s.timestamp_us, s.power_mw, strict=False)]
            )
            spans = [(round(t0 * 1e6), round(t1 * 1e6), j * 1e3) for t0, t1, j in counter_deltas(readings, curve)]
            fleet.attributor.restore(uuid, spans, power)
            logger.info("GPU %s: %d energy spans to attribute after the restart", uuid, len(spans))
