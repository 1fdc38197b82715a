"""Persists the telemetry side of the fleet: nodes with their stream position,
GPUs with their energy accumulators. A commit is what makes an ack true."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from neocloud.domain.fleet import Cell, CellKey, EnergyAccumulator, GpuState, NodeState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Rows to write, copied out of the live state so the write can run in
    another thread while ingest goes on."""

    nodes: Sequence[tuple[object, ...]]
    gpus: Sequence[tuple[object, ...]]
    seqs: dict[str, tuple[int, int]]  # node -> (stream epoch, last seq)
    cells: dict[CellKey, Cell] = field(default_factory=dict)
    watermarks: dict[str, tuple[int, float]] = field(default_factory=dict)  # uuid -> (to µs, total mJ)

    def empty(self) -> bool:
        return not (self.nodes or self.gpus or self.cells or self.watermarks)


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
            "INSERT OR REPLACE INTO meter_watermarks (uuid, attributed_to_us, attributed_total_mj) VALUES (?, ?, ?)",
            [(uuid, t_us, total) for uuid, (t_us, total) in snap.watermarks.items()],
        )
        # The ledger re-meters every hour that changed.
        db.executemany(
            "INSERT OR REPLACE INTO meter_dirty (hour, stamp) VALUES (?, random())",
            [(h,) for h in {k[2] for k in snap.cells}],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def load(
    db: sqlite3.Connection, node_id: str | None = None
) -> tuple[dict[str, NodeState], dict[str, tuple[int, float]]]:
    """The nodes (or the one node `node_id`) with their GPUs as last committed, and
    each GPU's attribution watermark: (attributed up to µs, attributed total mJ)."""
    nodes: dict[str, NodeState] = {}
    one = "" if node_id is None else " WHERE node_id = ?"
    args = () if node_id is None else (node_id,)
    for row in db.execute(
        "SELECT node_id, agent_version, backend, stream_epoch, last_seq, dropped_samples_total,"
        " first_seen_us, last_seen_us FROM nodes" + one,
        args,
    ):
        node = NodeState(row[0], row[1], row[2], row[3], row[4], {}, row[6], row[7], dropped_samples_total=row[5])
        node.durable_seq = node.last_seq
        nodes[node.node_id] = node
    for row in db.execute(
        "SELECT uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw, energy_last_mj,"
        " energy_last_us, energy_total_mj, energy_resets, last_power_mw, xid_errors_total, unhealthy_reason FROM gpus"
        + one,
        args,
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
        nodes[gpu.node_id].gpus[gpu.uuid] = gpu
    marks = {
        str(r[0]): (int(r[1]), float(r[2]))
        for r in db.execute("SELECT uuid, attributed_to_us, attributed_total_mj FROM meter_watermarks")
        if node_id is None or any(str(r[0]) in n.gpus for n in nodes.values())
    }
    return nodes, marks
