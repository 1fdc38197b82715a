"""What the fleet holds at the start of a pass: one walk over the running jobs
and one over the nodes, producing per-node counts (never per-GPU work where a
count will do) and the usage totals the rest of the pass needs.

Performance shapes this module: a node whose GPUs are all placeable and all
allocated costs one comparison; the views the preemption planner walks (nodes
holding only one class of work, nodes whose work is all under notice, nodes
mixing classes) are built on first use only.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from operator import attrgetter
from typing import Any

from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass, NodeView, PolicyInput, RunningJob

logger = logging.getLogger(__name__)

# Owner of a node that already hosts two isolation owners: matches no job.
MIXED = "\x00mixed"

INTERNAL = int(JobClass.INTERNAL)
RESERVED = int(JobClass.RESERVED)
ON_DEMAND = int(JobClass.ON_DEMAND)
SPOT = int(JobClass.SPOT)

Entry = tuple[RunningJob, tuple[str, ...]]  # a running job and its GPUs on one node


def iso_key(tenant: str, job_class: int) -> str:
    """Who a node belongs to under tenant isolation: internal teams share one key."""
    return INTERNAL_TENANT if job_class == INTERNAL or tenant == INTERNAL_TENANT else tenant


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
        self._node_ix: dict[str, int] | None = None
        self.running = running = inp.running

        # --- running jobs: who sits where, and usage totals
        # occ[node] = [GPUs allocated there, bit mask of the classes not under notice there, job, job, ...]
        occ: dict[str, list[Any]] = {}
        occ_get = occ.get
        usage: dict[str, list[float]] = {}  # tenant -> [GPUs, expected watts]
        usage_get = usage.get
        contract_use: dict[str, list[float]] = {}  # contract -> [GPUs, expected watts]
        reserved: list[RunningJob] = []
        internal_gpus = 0  # internal GPUs not under notice (the floor counts these)
        noticed: list[str] = []  # nodes holding work under notice
        self._noticed = noticed
        for j in running:
            cls = j.job_class
            bit = 1 << cls if j.preemption_notice_at is None else 0
            pj = j.placement
            if len(pj) == 1:
                nid, gs = pj[0]
                c = len(gs)
                lst = occ_get(nid)
                if lst is None:
                    occ[nid] = [c, bit, j]
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
                        occ[nid] = [k, bit, j]
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
            if cls == INTERNAL or t == INTERNAL_TENANT:
                if j.preemption_notice_at is None:
                    internal_gpus += c
            elif cls == RESERVED:
                reserved.append(j)
                if j.contract_id is not None:
                    cu = contract_use.get(j.contract_id)
                    if cu is None:
                        contract_use[j.contract_id] = [c, w]
                    else:
                        cu[0] += c
                        cu[1] += w
        self.occ = occ
        self.reserved_jobs = reserved  # every running reserved job (checked against its contract)
        self.tenant_gpus = {t: int(u[0]) for t, u in usage.items()}
        self.tenant_power_w = {t: u[1] for t, u in usage.items()}
        self.contract_gpus = {cid: int(u[0]) for cid, u in contract_use.items()}
        self.contract_power_w = {cid: u[1] for cid, u in contract_use.items()}
        self.internal_gpus = internal_gpus

        # --- nodes: free counts and owners
        sizes = list(map(len, map(attrgetter("gpus"), nodes)))
        self.fleet_gpus = sum(sizes)
        self.max_size = max(sizes, default=0)
        self.min_size = min(sizes, default=0)
        self.model_nodes = Counter(map(attrgetter("gpu_model"), nodes))
        self.models = sorted(self.model_nodes)
        self._sizes: Counter[tuple[str, int]] | None = None
        n_nodes = len(nodes)
        free = [0] * n_nodes
        owner: list[str | None] = [None] * n_nodes
        whole: defaultdict[str, list[int]] = defaultdict(list)  # model -> empty nodes, all placeable
        empties: dict[tuple[str, int], list[int]] = {}  # (model, free GPUs) -> empty nodes, node order
        self.partial: list[int] = []  # occupied nodes with free placeable GPUs, not cordoned
        self.unplaceable: list[RunningJob] = []  # jobs holding a GPU that is no longer placeable
        seen_unplaceable: set[str] = set()
        partial = self.partial
        by_mask: list[list[int]] = [[] for _ in range(1 << (INTERNAL + 1))]  # class mask -> nodes, node order
        self._by_mask = by_mask
        matched = 0
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
            matched += 1
            by_mask[lst[1]].append(i)  # for the preemption planner
            allp = len(pl) == ng
            if allp and lst[0] >= ng:
                continue  # every GPU allocated, none unhealthy
            j = lst[2]
            o = INTERNAL_TENANT if j.job_class == INTERNAL or j.tenant == INTERNAL_TENANT else j.tenant
            for k in range(3, len(lst)):
                j = lst[k]
                key = INTERNAL_TENANT if j.job_class == INTERNAL or j.tenant == INTERNAL_TENANT else j.tenant
                if key != o:
                    o = MIXED
            owner[i] = o
            if allp:
                f = ng - lst[0]
            else:
                nid = n.node_id
                taken: set[str] = set()
                for k in range(2, len(lst)):
                    j = lst[k]
                    gs = gpus_on(j, nid)
                    taken.update(gs)
                    if j.job_id not in seen_unplaceable and not pl.issuperset(gs):
                        seen_unplaceable.add(j.job_id)
                        self.unplaceable.append(j)
                f = len(pl - taken)
            if f > 0 and not n.cordoned:
                free[i] = f
                partial.append(i)
        if matched < len(occ):  # work on nodes the inventory no longer lists: lost
            self.node_ix  # noqa: B018 (builds the index)
            for nid, lst in occ.items():
                if nid not in self.node_ix:
                    for j in lst[2:]:
                        if j.job_id not in seen_unplaceable:
                            seen_unplaceable.add(j.job_id)
                            self.unplaceable.append(j)
        self.clean = [i for w in whole.values() for i in w]  # empty nodes, every GPU placeable
        for m, node_ixs in whole.items():
            if self.min_size == self.max_size:
                empties[(m, self.max_size)] = node_ixs
            else:
                for i in node_ixs:
                    empties.setdefault((m, free[i]), []).append(i)
        self.empties = empties
        self.free = free
        self.owner = owner
        self.measured_w = sum(map(attrgetter("power_draw_w"), nodes))
        self._tiers: dict[int, dict[str, list[int]]] = {}
        self._gone_only: dict[str, list[int]] | None = None
        self._mixed: dict[str, list[int]] | None = None

    @property
    def node_ix(self) -> dict[str, int]:
        """Node id -> index in inp.nodes (built on first use)."""
        if self._node_ix is None:
            self._node_ix = dict(zip(map(attrgetter("node_id"), self.nodes), range(len(self.nodes)), strict=True))
        return self._node_ix

    @property
    def lent_jobs(self) -> list[RunningJob]:
        return [j for j in self.running if j.on_lent_capacity]

    # --- per-node views

    def entries(self, node_id: str) -> list[Entry]:
        """The running jobs on a node with their GPUs there."""
        lst = self.occ.get(node_id)
        return [(j, gpus_on(j, node_id)) for j in lst[2:]] if lst is not None else []

    def jobs_on(self, node_id: str) -> list[RunningJob]:
        lst = self.occ.get(node_id)
        return lst[2:] if lst is not None else []

    def free_gpus(self, node: NodeView) -> list[str]:
        """Free placeable GPUs of a node in index order (allocated GPUs left out)."""
        lst = self.occ.get(node.node_id)
        pl = node.placeable
        if lst is None:
            if len(pl) == len(node.gpus):
                return list(node.gpus)
            return [u for u in node.gpus if u in pl]
        taken: set[str] = set()
        for k in range(2, len(lst)):
            taken.update(gpus_on(lst[k], node.node_id))
        return [u for u in node.gpus if u in pl and u not in taken]

    def static(self, model: str, g: int) -> int:
        """Nodes of `model` in the fleet (in any state) with at least g GPUs."""
        if g <= self.min_size:
            return self.model_nodes.get(model, 0)
        if self._sizes is None:
            self._sizes = Counter(
                zip(
                    map(attrgetter("gpu_model"), self.nodes), map(len, map(attrgetter("gpus"), self.nodes)), strict=True
                )
            )
        return sum(c for (m, s), c in self._sizes.items() if m == model and s >= g)

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
            self._tiers[cls] = self._by_model(by_mask[1 << cls])
        ix = self.node_ix
        self._gone_only = self._by_model(sorted({ix[nid] for nid in self._noticed if nid in ix}))
        evictable = (1 << SPOT) | (1 << ON_DEMAND) | (1 << INTERNAL)
        mixed = [i for mask, lst in enumerate(by_mask) if mask & (mask - 1) and mask & evictable for i in lst]
        mixed.sort()
        self._mixed = self._by_model(mixed)

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
