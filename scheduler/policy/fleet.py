"""What the fleet holds at the start of a pass: one walk over the running jobs
and one over the nodes, producing per-node counts (never per-GPU work where a
count will do) and the usage totals the rest of the pass needs.

Performance shapes this module (it is a third of a pass over a large fleet):
a node whose GPUs are all placeable and all allocated costs a lookup, a
comparison and a place in its (model, classes) bucket; the views the
preemption planner walks (nodes holding only one class of work, nodes whose
work is all under notice, nodes mixing classes) are put together from those
buckets on first use only. Each occupied node has one list (see `occ`),
which also records the node's index, so no node-id index is built; the hot
loops avoid comprehensions that would make their locals closure cells.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from itertools import filterfalse
from typing import Any

from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass, PolicyInput, RunningJob

logger = logging.getLogger(__name__)

# Owner of a node that already hosts two isolation owners: matches no job.
MIXED = "\x00mixed"

INTERNAL = int(JobClass.INTERNAL)
RESERVED = int(JobClass.RESERVED)
ON_DEMAND = int(JobClass.ON_DEMAND)
SPOT = int(JobClass.SPOT)


def iso_key(tenant: str, job_class: int) -> str:
    """Who a node belongs to under tenant isolation: internal teams share one key."""
    return INTERNAL_TENANT if job_class == INTERNAL or tenant == INTERNAL_TENANT else tenant


def may_run_on(sandboxed: bool, key: str) -> bool:
    """Whether work of isolation owner `key` may run on a node: tenant work only where it can sandbox
    ranks. The one rule for placement (its pools), preemption plans and rooms."""
    return sandboxed or key == INTERNAL_TENANT


def is_internal(tenant: str, job_class: int) -> bool:
    return job_class == INTERNAL or tenant == INTERNAL_TENANT


def gpus_on(j: RunningJob, node_id: str) -> tuple[str, ...]:
    """The GPUs job j holds on one node."""
    for nid, gs in j.placement:
        if nid == node_id:
            return gs
    return ()


class FleetState:
    """Per-node free counts, owners and occupants, plus usage totals."""

    def __init__(self, inp: PolicyInput) -> None:
        self.nodes = nodes = inp.nodes
        self.running = inp.running
        # occ[node id] = [GPUs allocated there, bit mask of the classes not under notice there, node index, job, ...]
        self.occ: dict[str, list[Any]] = {}
        self._noticed: list[str] = []  # nodes holding work under notice
        self._walk_running()
        # (comprehensions: cheaper per node than map(attrgetter(...)))
        sizes = [len(n.gpus) for n in nodes]
        self.fleet_gpus = sum(sizes)
        self.max_size = max(sizes, default=0)
        self.min_size = min(sizes, default=0)
        self.model_nodes = Counter([n.gpu_model for n in nodes])
        self.models = sorted(self.model_nodes)
        self._sizes: Counter[tuple[str, int]] | None = None
        self.measured_w = sum([n.power_draw_w for n in nodes])
        self._walk_nodes(sizes)
        self._tiers: dict[int, dict[str, list[int]]] = {}
        self._gone_only: dict[str, list[int]] | None = None
        self._mixed: dict[str, list[int]] | None = None

    def _walk_running(self) -> None:
        """Who sits where, and usage totals per tenant and per contract."""
        occ = self.occ
        occ_get = occ.get
        noticed = self._noticed
        usage: dict[str, list[float]] = {}  # tenant -> [GPUs, expected watts]
        usage_get = usage.get
        contract_use: dict[str, list[float]] = {}  # contract -> [GPUs, expected watts]
        reserved: list[RunningJob] = []
        lent: list[RunningJob] = []
        internal_gpus = 0  # internal GPUs not under notice (the floor counts these)
        for j in self.running:
            cls = j.job_class
            bit = 1 << cls if j.preemption_notice_at is None else 0
            pj = j.placement
            if len(pj) == 1:  # the common case, inline
                nid, gs = pj[0]
                c = len(gs)
                lst = occ_get(nid)
                if lst is None:
                    occ[nid] = [c, bit, -1, j]
                else:
                    lst[0] += c
                    lst[1] |= bit
                    lst.append(j)
                if not bit:
                    noticed.append(nid)
            else:
                c = 0
                for nid, gs in pj:
                    lst = occ_get(nid)
                    k = len(gs)
                    if lst is None:
                        occ[nid] = [k, bit, -1, j]
                    else:
                        lst[0] += k
                        lst[1] |= bit
                        lst.append(j)
                    if not bit:
                        noticed.append(nid)
                    c += k
            t = j.tenant
            w = c * j.expected_power_w_per_gpu
            u = usage_get(t)
            if u is None:
                usage[t] = [c, w]
            else:
                u[0] += c
                u[1] += w
            if cls >= RESERVED or t == INTERNAL_TENANT:  # (one test for the spot and on-demand majority)
                if cls == INTERNAL or t == INTERNAL_TENANT:
                    if bit:
                        internal_gpus += c
                else:
                    reserved.append(j)
                    if j.contract_id is not None:
                        cu = contract_use.get(j.contract_id)
                        if cu is None:
                            contract_use[j.contract_id] = [c, w]
                        else:
                            cu[0] += c
                            cu[1] += w
            if j.on_lent_capacity:
                lent.append(j)
        self.reserved_jobs = reserved  # every running reserved job (checked against its contract)
        self.lent_jobs = lent  # jobs running on capacity a contract lent out
        self.tenant_gpus = {t: int(u[0]) for t, u in usage.items()}
        self.tenant_power_w = {t: u[1] for t, u in usage.items()}
        self.contract_gpus = {cid: int(u[0]) for cid, u in contract_use.items()}
        self.contract_power_w = {cid: u[1] for cid, u in contract_use.items()}
        self.internal_gpus = internal_gpus

    def _walk_nodes(self, sizes: list[int]) -> None:
        """Free placeable GPUs and isolation owner per node; the empty, partly used and unplaceable lists."""
        nodes, occ = self.nodes, self.occ
        n_nodes = len(nodes)
        self.free = free = [0] * n_nodes
        self.owner: list[str | None] = [None] * n_nodes
        owner = self.owner
        whole: defaultdict[str, list[int]] = defaultdict(list)  # model -> empty nodes, all placeable
        empties: dict[tuple[str, int], list[int]] = {}  # (model, free GPUs) -> empty nodes, node order
        self.partial: list[int] = []  # occupied nodes with free placeable GPUs, not cordoned
        partial = self.partial
        self.unplaceable: list[RunningJob] = []  # jobs holding a GPU that is no longer placeable
        seen_unplaceable: set[str] = set()
        # model -> class mask -> occupied nodes in node order, for the preemption planner
        self._by_mask: dict[str, list[list[int]]] = {m: [[] for _ in range(1 << (INTERNAL + 1))] for m in self.models}
        by_mask = self._by_mask
        occ_get = occ.get
        for i, n in enumerate(nodes):
            lst = occ_get(n.node_id)
            pl = n.placeable
            ng = sizes[i]
            if lst is None:
                if n.cordoned:
                    continue
                f = len(pl)
                if f == ng:
                    free[i] = f
                    whole[n.gpu_model].append(i)
                elif f:
                    free[i] = f
                    empties.setdefault((n.gpu_model, f), []).append(i)
                continue
            lst[2] = i
            by_mask[n.gpu_model][lst[1]].append(i)
            allp = len(pl) == ng
            if allp and lst[0] >= ng:
                continue  # every GPU allocated, none unhealthy
            jobs = lst[3:]
            o = None
            for j in jobs:
                key = INTERNAL_TENANT if j.job_class == INTERNAL or j.tenant == INTERNAL_TENANT else j.tenant
                if o is None:
                    o = key
                elif key != o:
                    o = MIXED
            owner[i] = o
            if allp:
                f = ng - lst[0]
            else:
                nid = n.node_id
                left = set(pl)
                for j in jobs:
                    pj = j.placement
                    gs = pj[0][1] if len(pj) == 1 else gpus_on(j, nid)
                    left.difference_update(gs)
                    if not pl.issuperset(gs) and j.job_id not in seen_unplaceable:
                        seen_unplaceable.add(j.job_id)
                        self.unplaceable.append(j)
                f = len(left)
            if f > 0 and not n.cordoned:
                free[i] = f
                partial.append(i)
        if sum(len(lst) for masks in by_mask.values() for lst in masks) < len(occ):  # work on unlisted nodes: lost
            for lst in occ.values():
                if lst[2] < 0:
                    for j in lst[3:]:
                        if j.job_id not in seen_unplaceable:
                            seen_unplaceable.add(j.job_id)
                            self.unplaceable.append(j)
        for m, node_ixs in whole.items():
            if self.min_size == self.max_size:
                empties[(m, self.max_size)] = node_ixs
            else:
                for i in node_ixs:
                    empties.setdefault((m, free[i]), []).append(i)
        self.empties = empties

    def index(self, node_id: str) -> int | None:
        """Index in inp.nodes of a node running work (None: not running any, or no longer listed)."""
        lst = self.occ.get(node_id)
        return lst[2] if lst is not None and lst[2] >= 0 else None

    # --- per-node views

    def jobs_on(self, i: int) -> list[RunningJob]:
        """The running jobs on node i."""
        lst = self.occ.get(self.nodes[i].node_id)
        return lst[3:] if lst is not None else []

    def free_gpus(self, i: int) -> list[str]:
        """Free placeable GPUs of node i in index order (allocated GPUs left out)."""
        node = self.nodes[i]
        lst = self.occ.get(node.node_id)
        pl = node.placeable
        allp = len(pl) == len(node.gpus)
        if lst is None:
            return list(node.gpus) if allp else list(filter(pl.__contains__, node.gpus))
        nid = node.node_id
        taken: set[str] = set()
        for j in lst[3:]:
            pj = j.placement
            taken.update(pj[0][1] if len(pj) == 1 else gpus_on(j, nid))
        if not allp:
            taken.update(pl.symmetric_difference(node.gpus))  # (the GPUs not placeable)
        return list(filterfalse(taken.__contains__, node.gpus))

    def static(self, model: str, g: int) -> int:
        """Nodes of `model` in the fleet (in any state) with at least g GPUs."""
        if g <= self.min_size:
            return self.model_nodes.get(model, 0)
        if self._sizes is None:
            self._sizes = Counter((n.gpu_model, len(n.gpus)) for n in self.nodes)
        count = 0
        for (m, s), c in self._sizes.items():  # (a loop: a generator here would make closure cells on every call)
            if m == model and s >= g:
                count += c
        return count

    # --- what the preemption planner walks, built on first use

    def _by_model(self, nodes: list[int]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        all_nodes = self.nodes
        for i in nodes:
            m = all_nodes[i].gpu_model
            t = out.get(m)
            if t is None:
                out[m] = [i]
            else:
                t.append(i)
        return out

    def _classify(self) -> None:
        """Nodes by what they hold: one class (not under notice), some work under notice, or several classes."""
        by_mask = self._by_mask
        for cls in (SPOT, ON_DEMAND, INTERNAL):
            self._tiers[cls] = {m: masks[1 << cls] for m, masks in by_mask.items()}
        occ = self.occ
        self._gone_only = self._by_model(sorted({occ[nid][2] for nid in self._noticed if occ[nid][2] >= 0}))
        evictable = (1 << SPOT) | (1 << ON_DEMAND) | (1 << INTERNAL)
        self._mixed = {}
        for m, masks in by_mask.items():
            mixed = [i for mask, lst in enumerate(masks) if mask & (mask - 1) and mask & evictable for i in lst]
            mixed.sort()
            self._mixed[m] = mixed

    def tier(self, model: str, cls: int) -> list[int]:
        """Nodes of `model` whose work not under notice is all of class `cls` (node order)."""
        if self._gone_only is None:
            self._classify()
        return self._tiers.get(cls, {}).get(model, [])

    def gone_only(self, model: str) -> list[int]:
        """Nodes of `model` holding work under notice (it frees GPUs soon), node order."""
        if self._gone_only is None:
            self._classify()
        assert self._gone_only is not None
        return self._gone_only.get(model, [])

    def mixed(self, model: str) -> list[int]:
        """Nodes of `model` holding work of several classes."""
        if self._mixed is None:
            self._classify()
        assert self._mixed is not None
        return self._mixed.get(model, [])
