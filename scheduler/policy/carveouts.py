"""Carve-outs: the nodes a pass sets aside for contracts' unused GPUs.

Carve-outs make "reserved but unused" capacity concrete: for each GPU contract
active now (or starting within the reclaim-warning horizon) the pass sets
aside whole nodes worth its unused GPUs (rounded up to whole nodes): nodes
already running spot on lent capacity first (so lending stays stable from pass
to pass), then empty nodes in node order, only nodes the holder may run on
(fleet.may_run_on). Under isolation the free GPUs on the holder's own nodes
count towards it. Only the holder and spot see those nodes (placement.py pools
them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from neocloud.scheduler.policy.contracts import ContractBook
from neocloud.scheduler.policy.fleet import FleetState, may_run_on

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Carveouts:
    resv: dict[int, str] = field(default_factory=dict)  # node -> contract it is carved out for
    carved: dict[str, list[str]] = field(default_factory=dict)  # model -> contracts with carve-outs in it
    # (model, free GPUs) -> how many of fleet.empties[(model, free GPUs)] the carving walked
    cursors: dict[tuple[str, int], int] = field(default_factory=dict)


def lent_nodes(fleet: FleetState) -> dict[str, list[int]]:
    """Per model: nodes whose every job is spot on lent capacity, node order."""
    nodes = fleet.nodes
    out: dict[str, list[int]] = {}
    seen: set[int] = set()
    for j in fleet.lent_jobs:
        for nid, _ in j.placement:
            i = fleet.index(nid)
            if i is None or i in seen or nodes[i].cordoned:
                continue
            seen.add(i)
            if all(x.on_lent_capacity and x.preemption_notice_at is None for x in fleet.jobs_on(i)):
                out.setdefault(nodes[i].gpu_model, []).append(i)
    for lst in out.values():
        lst.sort()
    return out


def carve(fleet: FleetState, book: ContractBook, horizon_s: float, iso: bool) -> Carveouts:
    out = Carveouts()
    targets = book.carve_targets(horizon_s)
    if not targets:
        return out
    nodes, resv, cursors = fleet.nodes, out.resv, out.cursors
    lent = lent_nodes(fleet)
    holder_free: dict[tuple[str, str | None], int] = {}
    if iso:
        holders = {c.tenant for c, _ in targets}
        owner, free = fleet.owner, fleet.free
        for i in fleet.partial:
            if owner[i] in holders:
                key = (nodes[i].gpu_model, owner[i])
                holder_free[key] = holder_free.get(key, 0) + free[i]
    empties = fleet.empties
    for c, h in targets:
        models = [c.gpu_model] if c.gpu_model else fleet.models
        if iso:
            h -= sum(holder_free.get((m, c.tenant), 0) for m in models)
        for m in models:
            if h <= 0:
                break
            out.carved.setdefault(m, []).append(c.contract_id)
            for i in lent.get(m, ()):
                if h <= 0:
                    break
                if i not in resv:
                    resv[i] = c.contract_id
                    h -= len(nodes[i].placeable)
            for f in range(fleet.max_size, 0, -1):
                lst = empties.get((m, f))
                if not lst:
                    continue
                cur = cursors.get((m, f), 0)
                while h > 0 and cur < len(lst):
                    i = lst[cur]
                    cur += 1
                    if may_run_on(nodes[i].sandboxed, c.tenant):  # (else a carve-out its holder cannot use)
                        resv[i] = c.contract_id
                        h -= f
                cursors[(m, f)] = cur
    return out
