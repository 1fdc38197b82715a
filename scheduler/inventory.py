"""What the policy may place on, derived from telemetry, the executor's view of
Ray nodes, operator cordons and GPUs still awaiting proof that a previous job
left no process behind."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from neocloud.domain.fleet import NodeState
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.policy.types import NodeView

# A node whose agent has been silent this long counts as lost: nothing is placed
# there and the work on it is requeued (a short agent restart is not a loss).
AGENT_LOST_AFTER_S = 60.0


def agent_lost(node: NodeState, now: float) -> bool:
    return not node.connected and now - node.last_seen_us / 1e6 > AGENT_LOST_AFTER_S


def node_views(
    fleet: Fleet,
    now: float,
    ray_nodes: Collection[str] | None,
    cordoned: Collection[str],
    awaiting_clean: Collection[str],
) -> tuple[NodeView, ...]:
    """One NodeView per node the agents reported, in node-id order.

    `ray_nodes` are the node ids whose Ray worker is alive (None: no executor,
    e.g. in tests of the policy wiring); a node without one cannot run jobs.
    """
    views = []
    for node_id in sorted(fleet.nodes):
        node = fleet.nodes[node_id]
        gpus = sorted(node.gpus.values(), key=lambda g: g.index)
        if not gpus:
            continue
        usable = not agent_lost(node, now) and (ray_nodes is None or node_id in ray_nodes)
        placeable = frozenset(
            g.uuid for g in gpus if usable and g.unhealthy_reason is None and g.uuid not in awaiting_clean
        )
        views.append(
            NodeView(
                node_id=node_id,
                gpu_model=gpus[0].model,
                gpus=tuple(g.uuid for g in gpus),
                placeable=placeable,
                power_draw_w=sum(g.last_power_mw for g in gpus) / 1e3,
                cordoned=node_id in cordoned,
            )
        )
    return tuple(views)


def processes_gone(fleet: Fleet, gpu_uuids: Iterable[str], pids: Collection[int], since_us: int) -> bool:
    """True once every GPU reported a sample taken after `since_us` with none
    of `pids` among its compute processes (NVML's view, not Ray's)."""
    for uuid in gpu_uuids:
        node = fleet.nodes.get(fleet.gpu_owner.get(uuid, ""))
        gpu = node.gpus.get(uuid) if node else None
        if gpu is None or gpu.last_series is None or gpu.last_sample_us <= since_us:
            return False
        if any(p.pid in pids for p in gpu.last_series.processes):
            return False
    return True
