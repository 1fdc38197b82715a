"""Early reclaim warnings: tell running work it is about to be reclaimed
before the preemption notice comes (docs/DESIGN.md section 3; no public scheduler
does this).

The rule. A running job gets a ReclaimWarning in a pass when
1. queued internal work, or reserved work inside its active contract, does not
   fit in free capacity, the preemption plan that would make room for it
   cannot run yet because some victim is younger than min_runtime_s, and the
   same plan with that limit lifted can: every victim of that plan is warned
   (engine.py; the plan's nodes are held, nothing is preempted, and the
   notice follows once the youngest victim may be preempted), or
2. a queued reserved job (within its contract's size) belongs to a contract
   that starts within reclaim_warning_s, does not fit in free capacity, and
   a plan with the same limit lifted can make room: its victims are warned
   now (this module; nothing is held, nothing is preempted).
Work already under notice, or preempted in the same pass, is never warned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from neocloud.scheduler.policy import explain
from neocloud.scheduler.policy.contracts import ContractBook
from neocloud.scheduler.policy.fleet import INTERNAL, RESERVED, SPOT, FleetState, iso_key
from neocloud.scheduler.policy.placement import Placer
from neocloud.scheduler.policy.preempt import Planner
from neocloud.scheduler.policy.types import Contract, JobRequest, ReclaimWarning, RunningJob

logger = logging.getLogger(__name__)

# What a reserved job inside its contract may preempt, lowest class first.
RESERVED_VICTIMS = (SPOT, INTERNAL)


def warn(warnings: dict[str, ReclaimWarning], victims: Iterable[RunningJob], why: str) -> None:
    """Warn each victim not under notice yet (the first reason given stays)."""
    for v in victims:
        if v.preemption_notice_at is None and v.job_id not in warnings:
            warnings[v.job_id] = ReclaimWarning(v.job_id, why)


def warn_future_contracts(
    future: list[tuple[JobRequest, Contract]],
    book: ContractBook,
    fleet: FleetState,
    placer: Placer,
    planner: Planner,
    internal_spare: int,
    warnings: dict[str, ReclaimWarning],
) -> None:
    """Part 2 of the rule: `future` are the queued jobs of contracts starting within the horizon, in queue order.

    Each job's dry-run plan avoids the nodes of the plans before it, so two
    jobs never count on the same victims."""
    exclude: set[int] = set()
    used: dict[str, int] = {}
    for job, c in future:
        g, k = job.gpus_per_node, job.gpus
        if g <= 0 or k <= 0 or k % g:
            continue
        cid = c.contract_id
        if c.gpus > 0 and book.used_gpus[cid] + used.get(cid, 0) + k > c.gpus:
            continue  # beyond the contract's size: it would not be admitted as reserved
        used[cid] = used.get(cid, 0) + k
        model = job.gpu_model or c.gpu_model
        key = iso_key(job.tenant, RESERVED)
        for m in (model,) if model is not None else fleet.models:
            if m not in fleet.model_nodes:
                continue
            pools = placer.holder(m, key, cid)
            if placer.ready(pools, g, k // g) >= k // g:
                break  # fits in free capacity: nothing to reclaim
            plan = planner.plan(m, key, g, k // g, pools, RESERVED_VICTIMS, (cid, None), internal_spare, True, exclude)
            if plan is None:
                continue
            exclude.update(plan.nodes)
            warn(warnings, plan.victims, explain.reclaim_at_start(cid, c.start))
            break
