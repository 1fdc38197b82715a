"""Reserved capacity a contract promised but the fleet could not deliver.

A GPU contract is delivered when its GPUs are in use by its own jobs or could
be: healthy, uncordoned GPUs of its model that are free or held by spot work
(which the contract reclaims). What is missing of `gpus` while the contract is
active — GPUs cordoned, unhealthy or lost — is undelivered, and the tenant gets
an SLA credit for it (billing/rating.py). Availability, not use: take-or-pay
pays for capacity being there. Pure: no I/O, no clock.

Other contracts' unused reservations are not subtracted from what is counted
as available, so when several contracts are short at once each may be credited
less than a strict division would give.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from neocloud.scheduler.policy.types import Contract, JobClass, NodeView, RunningJob


def undelivered_gpus(
    contracts: Iterable[Contract], views: Sequence[NodeView], running: Sequence[RunningJob], now: float
) -> dict[str, int]:
    """contract id -> GPUs of the contract the fleet cannot deliver now (only those short)."""
    held_by: dict[str, RunningJob] = {u: job for job in running for _, uuids in job.placement for u in uuids}
    out = {}
    for c in contracts:
        if c.gpus <= 0 or not c.active(now):
            continue
        own = sum(1 for job in held_by.values() if job.contract_id == c.contract_id)
        available = 0
        for v in views:
            if v.cordoned or (c.gpu_model is not None and v.gpu_model != c.gpu_model):
                continue
            for uuid in v.placeable:
                job = held_by.get(uuid)
                if job is None or job.job_class is JobClass.SPOT:
                    available += 1
        missing = c.gpus - own - available
        if missing > 0:
            out[c.contract_id] = missing
    return out
