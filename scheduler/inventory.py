"""What the policy may place on, derived from telemetry, the executor's view of
Ray nodes, operator cordons and GPUs still awaiting proof that a previous job
left no process behind."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.liveness import NO_RESTART, Liveness
from neocloud.scheduler.policy.types import NodeView
from neocloud.v1 import telemetry_pb2 as pb


def node_views(
    fleet: Fleet,
    now: float,
    ray_nodes: Collection[str] | None,
    cordoned: Collection[str],
    awaiting_clean: Collection[str],
    liveness: Liveness = NO_RESTART,
    unsandboxed: Collection[str] = (),
) -> tuple[NodeView, ...]:
    """One NodeView per node the agents reported, in node-id order.

    `ray_nodes` are the node ids whose Ray worker is alive (None: no executor,
    e.g. in tests of the policy wiring); a node without one cannot run jobs.
    A node whose agent is lost (liveness.py) is unplaceable, so its work is
    preempted; one still within a restart's grace is drained like a cordoned
    node: nothing new is placed there and its work is left alone. An `unsandboxed`
    node (its runners cannot sandbox tenant ranks) takes internal work only.
    """
    views = []
    for node_id in sorted(fleet.nodes):
        node = fleet.nodes[node_id]
        gpus = sorted(node.gpus.values(), key=lambda g: g.index)
        if not gpus:
            continue
        usable = not liveness.lost(node, now) and (ray_nodes is None or node_id in ray_nodes)
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
                cordoned=node_id in cordoned or liveness.awaiting(node, now),
                sandboxed=node_id not in unsandboxed,
            )
        )
    return tuple(views)


def processes_gone(
    fleet: Fleet,
    gpu_uuids: Iterable[str],
    pids: Collection[int],
    since_us: int,
    namespaces: Collection[int] = (),
) -> bool:
    """True once every GPU reported a sample taken after `since_us` whose process
    list NVML could give and holds nothing that may be one of `pids` (NVML's view,
    not Ray's). `pids` are what the job's runners saw, in the PID namespaces
    `namespaces` (inodes; see may_be_ours). A GPU whose list is unavailable is
    never proven free: unknown is not gone."""
    for uuid in gpu_uuids:
        node = fleet.nodes.get(fleet.gpu_owner.get(uuid, ""))
        gpu = node.gpus.get(uuid) if node else None
        if gpu is None or gpu.last_series is None or gpu.last_sample_us <= since_us:
            return False
        series = gpu.last_series
        if series.processes_unavailable:
            return False
        if any(may_be_ours(p, pids, namespaces) for p in series.processes):
            return False
    return True


def may_be_ours(process: pb.GpuProcess, pids: Collection[int], namespaces: Collection[int]) -> bool:
    """Whether a GPU process may be one of `pids`, pids a runner saw in one of the
    PID `namespaces`; every doubt counts as yes (fail closed).

    - Its namespace is one of the runners': it is theirs if its pid there (the
      last of its NSpid chain) is one of `pids`. With the runner in the host's
      namespace this is the host pid NVML reports, as before namespaces.
    - Another namespace (one nested below a runner's, whose inode the agent
      cannot see, or a stranger's), or one the agent could not read (0): any
      pid of its chain among `pids` counts. A stranger whose pid merely
      coincides keeps the GPU held until it exits.
    - No chain (the process is gone from /proc, or the agent is not in the
      host's PID namespace): it may be anyone's, so it counts.
    """
    chain = process.namespace_pids
    if not chain:
        return True
    if process.pid_namespace and process.pid_namespace in namespaces:
        return chain[-1] in pids
    return any(p in pids for p in chain)
