"""One policy decision as the controller takes it: the inventory the policy may
place on, the PolicyInput built from the store and the controller's state, and
the pass itself."""

from __future__ import annotations

import gc

from neocloud.scheduler.control.state import ControlState, Running
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.inventory import node_views
from neocloud.scheduler.liveness import Liveness
from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Decision, JobRequest, NodeView, PolicyInput, RunningJob
from neocloud.scheduler.store.jobs import JobStore


def placeable(
    fleet: Fleet, state: ControlState, now: float, running: Running, liveness: Liveness
) -> tuple[NodeView, ...]:
    """The inventory the policy may use now. GPUs of released jobs wait for
    NVML, unless Ray has already given them to a running job."""
    held = {u for _, allocations in running for a in allocations for u in a.gpu_uuids}
    # GPUs of an ended job stay held by it, under notice, in the policy's view (policy_input);
    # those of a job released without our asking are simply not placeable.
    awaiting = {u for c in list(state.cleanups.values()) if c.holder is None for u in c.gpu_uuids} - held
    return node_views(fleet, now, state.ray_nodes, state.cordoned, awaiting, liveness, state.unsandboxed)


def policy_input(
    store: JobStore,
    state: ControlState,
    now: float,
    views: tuple[NodeView, ...],
    running_jobs: Running,
    rooms: dict[str, tuple[str, ...]] | None = None,
) -> PolicyInput:
    """`rooms`: the last Decision's (the policy drops those of jobs no longer queued)."""
    config = store.policy_config()
    running = tuple(
        RunningJob(
            job_id=job.job_id,
            tenant=job.tenant,
            job_class=job.job_class,
            placement=tuple((a.node_id, a.gpu_uuids) for a in allocations),
            started_at=job.started_at or now,
            contract_id=job.spec.contract_id,
            last_checkpoint_at=job.last_checkpoint_at,
            preemption_notice_at=job.preemption_notice_at,
            requeues=job.requeues,
        )
        for job, allocations in running_jobs
    )
    # Jobs that ended but whose GPUs NVML has not yet shown free: under notice, so
    # the policy counts their GPUs as freeing and never preempts more work for them.
    running += tuple(c.holder for c in list(state.cleanups.values()) if c.holder is not None)
    queue = tuple(
        JobRequest(
            job_id=job.job_id,
            tenant=job.tenant,
            job_class=job.job_class,
            gpus=job.spec.gpus,
            gpus_per_node=job.spec.gpus_per_node,
            submitted_at=job.queue_position,
            gpu_model=job.spec.gpu_model,
            contract_id=job.spec.contract_id,
            requeues=job.requeues,
        )
        for job in store.queued()
        if job.job_id not in state.cleanups  # still being released from its last run
    )
    # Usage over one half-life stands in for the decayed total.
    usage = store.usage_gpu_seconds_since(now - config.fair_share_half_life_s, now)
    contracts = tuple(c.as_policy() for c in store.list_contracts())
    return PolicyInput(now, views, contracts, running, queue, usage, config, dict(rooms or {}))


def decide(inp: PolicyInput) -> Decision:
    """The policy's pass over `inp`, as the controller takes it."""
    # The cyclic GC is paused for the pass and no longer: the pause is process-wide, so it is the controller's
    # call, not the pure policy's. It pays: a pass sets off ~70 young and ~0.6 full collections, each full one
    # walking the large long-lived input (16 ms on the bench's); `neocloud bench schedule`'s pass takes 60 ms
    # (median) paused, 90 ms not. A pass leaves no cyclic garbage, so nothing is left for later.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return schedule(inp)
    finally:
        if was_enabled:
            gc.enable()
