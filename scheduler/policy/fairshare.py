"""Weighted fair share between tenants: half-life decay of past usage, a
dominant share per tenant, and the order in which one class's queue is served.

The share of tenant t (smaller goes first) is

    share(t) = (past(t) + now(t)) / weight(t)
    past(t)  = usage_gpu_s(t) * ln 2 / (half_life_s * fleet_gpus)
    now(t)   = max(gpus_running(t) / fleet_gpus, power_running_w(t) / site_power_budget_w)

`usage_gpu_s` is decayed usage (see `decay`); a tenant that ran g GPUs for ever
accrues g * half_life / ln 2 of it, so `past` is "the fraction of the fleet it
has used lately" and `now` is the fraction it holds this instant: both are
fleet fractions and add up. `now` is a dominant-resource share (GPUs or site
power, whichever is larger; power only with a finite budget). Each placement
in a pass is charged at once, so one pass interleaves tenants instead of
serving one tenant's whole backlog first.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter

from neocloud.scheduler.policy.types import JobRequest

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)

_job_id = attrgetter("job_id")
_submitted_at = attrgetter("submitted_at")


def decay(usage_gpu_s: float, elapsed_s: float, half_life_s: float) -> float:
    """`usage_gpu_s` as it counts `elapsed_s` later: halved every `half_life_s`."""
    if elapsed_s <= 0.0:
        return usage_gpu_s
    if half_life_s <= 0.0:
        return 0.0
    return usage_gpu_s * 0.5 ** (elapsed_s / half_life_s)


def accrue(usage_gpu_s: float, elapsed_s: float, gpus: float, half_life_s: float) -> float:
    """Decayed usage after `gpus` more ran for `elapsed_s`: the old usage decays
    and the new GPU-seconds decay from the moment they were used."""
    if elapsed_s <= 0.0:
        return usage_gpu_s
    if half_life_s <= 0.0:
        return 0.0
    kept = 0.5 ** (elapsed_s / half_life_s)
    return usage_gpu_s * kept + gpus * half_life_s / LN2 * (1.0 - kept)


class Shares:
    """Each tenant's share in one pass, charged as the pass places jobs."""

    __slots__ = ("_gpu_scale", "_power_scale", "_rec")

    def __init__(
        self,
        usage_gpu_s: Mapping[str, float],
        gpus_running: Mapping[str, int],
        power_running_w: Mapping[str, float],
        fleet_gpus: int,
        site_power_budget_w: float,
        half_life_s: float,
        weights: Mapping[str, float],
    ) -> None:
        fleet = max(fleet_gpus, 1)
        self._gpu_scale = 1.0 / fleet
        budget_ok = math.isfinite(site_power_budget_w) and site_power_budget_w > 0.0
        self._power_scale = 1.0 / site_power_budget_w if budget_ok else 0.0
        past_scale = LN2 / (half_life_s * fleet) if half_life_s > 0.0 else 0.0
        tenants = set(usage_gpu_s) | set(gpus_running) | set(weights)
        # tenant -> [past share, 1 / weight, GPUs now, watts now]
        self._rec = {
            t: [
                usage_gpu_s.get(t, 0.0) * past_scale,
                1.0 / _weight(weights, t),
                float(gpus_running.get(t, 0)),
                power_running_w.get(t, 0.0) if budget_ok else 0.0,
            ]
            for t in tenants
        }

    def share(self, tenant: str) -> float:
        r = self._rec.get(tenant)
        if r is None:
            return 0.0
        now = r[2] * self._gpu_scale
        p = r[3] * self._power_scale
        return (r[0] + (p if p > now else now)) * r[1]

    def charge(self, tenant: str, gpus: int, power_w: float) -> None:
        """Add a placed job's GPUs and power to the tenant (`serve` does the same inline)."""
        r = self._rec.get(tenant)
        if r is None:
            r = self._rec[tenant] = [0.0, 1.0, 0.0, 0.0]
        r[2] += gpus
        if self._power_scale:
            r[3] += power_w


def _weight(weights: Mapping[str, float], tenant: str) -> float:
    w = weights.get(tenant, 1.0)
    return w if w > 0.0 else 1e-9


def serve(jobs: Iterable[JobRequest], shares: Shares, consider: Callable[[JobRequest], bool]) -> None:
    """Offer the jobs of one class to `consider`, lowest-share tenant first, FIFO
    within a tenant.

    `consider` returns True when it placed the job: the tenant is charged the
    job's GPUs and expected power and goes back into line with its new share.
    A job that is not placed leaves the share as it was, so the same tenant's
    next job follows. Ties go to the tenant name: the order is a pure function
    of the input.
    """
    # FIFO by (submitted_at, job_id): two stable sorts on one key each are cheaper than one on a tuple key.
    ordered = sorted(jobs, key=_job_id)
    ordered.sort(key=_submitted_at)
    by_tenant: dict[str, list[JobRequest]] = {}
    for job in ordered:
        q = by_tenant.get(job.tenant)
        if q is None:
            by_tenant[job.tenant] = [job]
        else:
            q.append(job)
    heap = [(shares.share(tenant), tenant) for tenant in by_tenant]
    heapq.heapify(heap)
    pos = dict.fromkeys(by_tenant, 0)
    # Shares.charge and Shares.share, inline: this runs once per placement.
    rec, gpu_scale, power_scale = shares._rec, shares._gpu_scale, shares._power_scale
    heapreplace, heappop = heapq.heapreplace, heapq.heappop
    for tenant in by_tenant:
        if tenant not in rec:
            rec[tenant] = [0.0, 1.0, 0.0, 0.0]
    while heap:
        tenant = heap[0][1]
        q = by_tenant[tenant]
        i = pos[tenant]
        end = len(q)
        while i < end:
            job = q[i]
            i += 1
            if consider(job):
                r = rec[tenant]
                r[2] += job.gpus
                if power_scale:
                    r[3] += job.gpus * job.expected_power_w_per_gpu
                if i < end:
                    pos[tenant] = i
                    now = r[2] * gpu_scale
                    p = r[3] * power_scale
                    heapreplace(heap, ((r[0] + (p if p > now else now)) * r[1], tenant))
                else:
                    heappop(heap)
                break
        else:
            heappop(heap)


def fair_order(jobs: Iterable[JobRequest], shares: Shares, placed: Callable[[JobRequest], bool]) -> list[JobRequest]:
    """The order `serve` offers the jobs in, given which of them get placed
    (placed jobs are charged to `shares`); for tests and explanations."""
    out: list[JobRequest] = []

    def consider(job: JobRequest) -> bool:
        out.append(job)
        return placed(job)

    serve(jobs, shares, consider)
    return out
