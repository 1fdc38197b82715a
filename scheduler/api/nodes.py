"""neocloud.v1.NodeService: the fleet, sinfo-style, for `neocloud nodes`.

Read-only, for any token. Counts come from the live fleet (the agents' latest
reports) and the store's open allocations and cordons. An operator sees every
job on every node; anyone else sees every node's counts (GPUs by state and by
class) but only its own jobs, so other tenants' job ids and names stay hidden.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TypeAlias, cast

import grpc

from neocloud.scheduler.api.auth import Authenticator, can_see
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Allocation, Job, Principal
from neocloud.v1 import jobs_pb2
from neocloud.v1 import nodes_pb2 as pb
from neocloud.v1 import nodes_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext


class NodeService(pb_grpc.NodeServiceServicer):
    def __init__(self, store: JobStore, fleet: Fleet, auth: Authenticator | None = None) -> None:
        self._store = store
        self._auth = auth or Authenticator(store)
        self._fleet = fleet

    async def ListNodes(self, request: pb.ListNodesRequest, context: Context) -> pb.ListNodesResponse:  # noqa: N802
        principal = await self._auth.principal(context)
        running = await asyncio.to_thread(self._store.running)
        cordons = {c.node_id: c.reason for c in await asyncio.to_thread(self._store.list_cordons)}
        by_node: dict[str, list[tuple[Job, Allocation]]] = {}
        for job, allocations in running:
            for a in allocations:
                by_node.setdefault(a.node_id, []).append((job, a))
        # The fleet changes on this event loop only, so reading it here needs no lock.
        return pb.ListNodesResponse(
            nodes=[
                _node(node_id, self._fleet, by_node.get(node_id, []), cordons, principal)
                for node_id in sorted(self._fleet.nodes)
            ]
        )


def _class_pb(job: Job) -> jobs_pb2.JobClass:
    return cast(jobs_pb2.JobClass, jobs_pb2.JobClass.Value(f"JOB_CLASS_{job.spec.job_class.name}"))


def _node(
    node_id: str,
    fleet: Fleet,
    held: list[tuple[Job, Allocation]],
    cordons: dict[str, str],
    principal: Principal,
) -> pb.Node:
    node = fleet.nodes[node_id]
    gpus = sorted(node.gpus.values(), key=lambda g: g.index)
    unhealthy = {g.uuid for g in gpus if g.unhealthy_reason is not None}
    owner = {uuid: job for job, a in held for uuid in a.gpu_uuids if uuid in node.gpus}
    allocated = set(owner) - unhealthy
    by_class = Counter(_class_pb(owner[uuid]) for uuid in allocated)
    jobs = Counter(job.job_id for job in owner.values())
    seen: dict[str, Job] = {job.job_id: job for job in owner.values()}
    return pb.Node(
        node_id=node_id,
        gpu_model=gpus[0].model if gpus else "",
        gpus=len(gpus),
        gpus_allocated=len(allocated),
        gpus_idle=len(gpus) - len(allocated) - len(unhealthy),
        gpus_unhealthy=len(unhealthy),
        allocated_by_class=[pb.ClassCount(job_class=c, gpus=n) for c, n in sorted(by_class.items())],
        power_w=sum(g.last_power_mw for g in gpus) / 1e3,
        power_limit_w=sum(g.power_limit_mw for g in gpus) / 1e3,
        connected=node.connected,
        last_seen_at=node.last_seen_us / 1e6,
        health=[f"{g.uuid}: {g.unhealthy_reason}" for g in gpus if g.unhealthy_reason is not None],
        cordoned=node_id in cordons,
        cordon_reason=cordons.get(node_id, ""),
        jobs=[
            pb.NodeJob(job_id=job_id, tenant=seen[job_id].tenant, job_class=_class_pb(seen[job_id]), gpus=n)
            for job_id, n in sorted(jobs.items())
            if can_see(principal, seen[job_id])
        ],
    )
