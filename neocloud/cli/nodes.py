"""`neocloud nodes`: the fleet, sinfo-style, through NodeService.ListNodes."""

from __future__ import annotations

import argparse

from neocloud.cli.common import command, connection_options, enum_value_word, fmt_time, show_list
from neocloud.client import CALL_TIMEOUT_S, Client
from neocloud.v1 import jobs_pb2
from neocloud.v1 import nodes_pb2 as pb

HEADERS = ("NODE", "MODEL", "GPUS", "ALLOC", "IDLE", "DOWN", "BY CLASS", "POWER W", "STATE", "REASON", "JOBS")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "nodes",
        parents=[connection_options()],
        help="the fleet: GPUs by state and class, power, health, cordons",
        description="One line per node its agent reported: GPU model; GPUs in all, allocated, idle and down "
        "(unhealthy); allocated GPUs by class; power draw against the GPUs' limits; state (up, down: agent "
        "disconnected, cordoned: nothing new placed) and why; jobs on it. Operators see every job; a tenant "
        "sees only its own (other GPUs count by class only).",
    )
    p.set_defaults(func=command(_nodes))


def _nodes(args: argparse.Namespace, client: Client) -> None:
    nodes = client.nodes.ListNodes(pb.ListNodesRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S).nodes
    show_list(args, nodes, HEADERS, _row)


def _row(n: pb.Node) -> tuple[object, ...]:
    classes = jobs_pb2.JobClass.DESCRIPTOR
    by_class = ",".join(f"{enum_value_word(classes, c.job_class)}:{c.gpus}" for c in n.allocated_by_class) or "-"
    state = "cordoned" if n.cordoned else "up" if n.connected else "down"
    reasons = [f"cordoned: {n.cordon_reason or '-'}"] if n.cordoned else []
    if not n.connected:
        reasons.append(f"agent last seen {fmt_time(n.last_seen_at)}")
    reasons += n.health
    reason = "; ".join(reasons) or "-"
    jobs = ",".join(j.job_id for j in n.jobs) or "-"
    power = f"{n.power_w:.0f}/{n.power_limit_w:.0f}"
    return (
        n.node_id,
        n.gpu_model,
        n.gpus,
        n.gpus_allocated,
        n.gpus_idle,
        n.gpus_unhealthy,
        by_class,
        power,
        state,
        reason,
        jobs,
    )
