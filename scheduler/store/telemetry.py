"""Persists the telemetry side of the fleet: nodes with their stream position,
GPUs with their energy accumulators. A commit is what makes an ack true."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from neocloud.scheduler.ingest.fleet import EnergyAccumulator, Fleet, GpuState, NodeState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Rows to write, copied out of the live state so the write can run in
    another thread while ingest goes on."""

    nodes: Sequence[tuple[object, ...]]
    gpus: Sequence[tuple[object, ...]]
    seqs: dict[str, tuple[int, int]]  # node -> (stream epoch, last seq)


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
    return Snapshot(nodes, gpus, seqs)


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
    return fleet
