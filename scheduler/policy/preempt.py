"""Which running jobs to preempt, and for whom.

A higher-class job that does not fit in free capacity may have room made for
it (engine.py decides who may preempt which classes). The planner picks n
nodes that can each give the job g GPUs once some running jobs leave:

- only nodes the job may run on are candidates (fleet.may_run_on: tenant
  work never has room made for it on a node that cannot sandbox it);
- candidates are walked cheapest first: nodes that already fit, nodes with
  work under notice or preempted earlier in the pass, the holder's own
  carve-out, then nodes holding only spot work, then only on-demand, then
  only internal work (each tier sorted lent-capacity first, then by least
  work lost), then nodes mixing classes; a candidate is taken if it can serve
  the job, until n are found;
- on a node, work of another isolation owner must all go (and be allowed
  to); of the job's own owner only as much as needed, cheapest first;
- work under notice (or preempted earlier in this pass) counts as free and is
  not preempted again; nothing younger than min_runtime_s is chosen (the
  relaxed plan used for early warnings lifts that);
- afterwards every victim whose removal still leaves the plan feasible is
  dropped, most expensive first, so the set is minimal; the nodes are chosen
  again among those the remaining victims free (one victim spanning two
  nodes may stand in for two others).

Work lost by a victim is now - last_checkpoint_at (or started_at).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from neocloud.scheduler.policy.fleet import INTERNAL, FleetState, gpus_on, iso_key, may_run_on
from neocloud.scheduler.policy.placement import Placer, Pool
from neocloud.scheduler.policy.types import INTERNAL_TENANT, PolicyInput, Preemption, RunningJob

logger = logging.getLogger(__name__)

UNHEALTHY = "GPU unhealthy"


def unplaceable_preemptions(jobs: Iterable[RunningJob], max_requeues: int) -> list[Preemption]:
    """Preempt (and requeue) work holding a GPU that is no longer placeable; not twice."""
    return [
        Preemption(j.job_id, UNHEALTHY, requeue=j.requeues < max_requeues)
        for j in jobs
        if j.preemption_notice_at is None
    ]


def jobs_on_unplaceable_gpus(inp: PolicyInput) -> list[Preemption]:
    """Running jobs with a GPU that is unhealthy, lost, or on a node no longer listed."""
    nodes = {n.node_id: n for n in inp.nodes}
    hit = []
    for j in inp.running:
        for nid, gpus in j.placement:
            n = nodes.get(nid)
            if n is None or not n.placeable.issuperset(gpus):
                hit.append(j)
                break
    return unplaceable_preemptions(hit, inp.config.max_requeues)


def work_lost(j: RunningJob, now: float) -> float:
    return now - (j.last_checkpoint_at if j.last_checkpoint_at is not None else j.started_at)


@dataclass(slots=True)
class Plan:
    nodes: list[int]
    victims: list[RunningJob]
    under_notice_gpus: int = 0  # GPUs on the plan's nodes that work already leaving will free
    wait_s: float = 0.0  # relaxed plans: until the youngest victim may be preempted
    young: list[RunningJob] = field(default_factory=list)


# A node that cannot serve a plan: (generation, the isolation owners it may still serve).
Dead = tuple[int, frozenset[str]]
NOBODY: frozenset[str] = frozenset()
INTERNAL_ONLY = frozenset((INTERNAL_TENANT,))  # a node that cannot sandbox tenant ranks


class Planner:
    """Preemption plans over one pass's fleet state; remembers what it preempted.

    To stay cheap over thousands of plans in one pass, nodes that cannot serve
    a plan are remembered per plan signature (model, slice, victim classes,
    reservations, relaxed): for every owner at once when the reason does not
    depend on who asks (under isolation: the node holds nothing of the asker),
    else per owner. A mark lapses when more work on the node is preempted.
    """

    def __init__(self, inp: PolicyInput, fleet: FleetState, placer: Placer) -> None:
        self.now = inp.now
        self.min_runtime_s = inp.config.min_runtime_s
        self.iso = inp.config.one_tenant_per_node
        self.nodes = inp.nodes
        self.fleet = fleet
        self.placer = placer
        self.gone: set[str] = set()  # preempted in this pass
        self.released: dict[str, list[int]] = {}  # model -> nodes of work preempted in this pass
        self._gen: dict[int, int] = {}  # node -> how often work on it was preempted in this pass
        self._tiers: dict[tuple[str, int], list[int]] = {}
        self._cursor: dict[object, int] = {}
        self._failed: dict[tuple[object, ...], dict[int, int]] = {}  # memo -> slice size -> fewest nodes failed
        self._dead: dict[tuple[object, ...], dict[int, Dead]] = {}
        self._small: dict[int, set[int]] = {}  # slice size g -> nodes with fewer than g placeable GPUs

    # --- bookkeeping

    def note_gone(self, j: RunningJob) -> None:
        self.gone.add(j.job_id)
        index, gen, claimed = self.fleet.index, self._gen, self.placer.claimed
        for nid, _ in j.placement:
            i = index(nid)
            if i is not None:
                gen[i] = gen.get(i, 0) + 1
                if i not in claimed:
                    self.released.setdefault(self.nodes[i].gpu_model, []).append(i)

    def _loss_key(self, j: RunningJob) -> tuple[int, int, float, str]:
        return (j.job_class, 0 if j.on_lent_capacity else 1, work_lost(j, self.now), j.job_id)

    def _tier(self, model: str, cls: int) -> list[int]:
        """Nodes holding only `cls` work, lent capacity first, then least work lost."""
        t = self._tiers.get((model, cls))
        if t is None:
            occ, nodes, now = self.fleet.occ, self.nodes, self.now
            keyed = []
            for i in self.fleet.tier(model, cls):
                lst = occ[nodes[i].node_id]
                lent = False
                lost = 0.0
                for k in range(3, len(lst)):
                    j = lst[k]
                    lent = lent or j.on_lent_capacity
                    lost += now - (j.last_checkpoint_at if j.last_checkpoint_at is not None else j.started_at)
                keyed.append((not lent, lost, i))
            keyed.sort()
            t = self._tiers[(model, cls)] = [i for _, _, i in keyed]
        return t

    def _walk(self, name: object, lst: list[int], skip: Callable[[int], bool]) -> Iterator[int]:
        """Nodes of `lst` not skipped; a skipped prefix is passed over for good."""
        cur = self._cursor.get(name, 0)
        while cur < len(lst) and skip(lst[cur]):
            cur += 1
        self._cursor[name] = cur
        for k in range(cur, len(lst)):
            i = lst[k]
            if not skip(i):
                yield i

    def _candidates(
        self,
        model: str,
        pools: list[Pool],
        g: int,
        allowed: tuple[int, ...],
        own: str | None,
        walk_id: tuple[object, ...],
        skip: Callable[[int], bool],
    ) -> Iterator[int]:
        """Cheapest first: nodes that fit now, nodes whose work is leaving, the
        holder's carve-out, single-class tiers (lowest class first), mixed nodes."""
        yield from self.placer.ready_nodes(pools, g)
        yield from self._walk(("gone", model, walk_id), self.fleet.gone_only(model), skip)
        yield from self._walk(("released", model, walk_id), self.released.get(model, []), skip)
        if own is not None:  # the holder's own carve-out (spot borrowing it goes first)
            yield from sorted(i for i, r in self.placer.resv.items() if r == own and self.nodes[i].gpu_model == model)
        for cls in sorted(allowed):
            yield from self._walk(("tier", model, cls, walk_id), self._tier(model, cls), skip)
        yield from self._walk(("mixed", model, walk_id), self.fleet.mixed(model), skip)

    # --- one node

    def _node(
        self,
        i: int,
        key: str,
        g: int,
        ok: dict[str, bool],
        chosen: dict[str, RunningJob],
        eligible: Callable[[RunningJob], bool],
    ) -> list[RunningJob] | frozenset[str] | None:
        """Victims on node i that leave g GPUs for owner `key` (with `chosen`
        gone); or, if the node cannot serve `key` whatever this plan chooses
        elsewhere, the other owners it might still serve; or None if it cannot
        serve this plan only (it holds a victim the plan already chose)."""
        n = self.nodes[i]
        pl = n.placeable
        allp = len(pl) == len(n.gpus)
        avail = self.placer.free[i]
        must: list[RunningJob] = []
        opt: list[tuple[RunningJob, int]] = []
        owners: set[str] = set()
        gone = self.gone
        nid = n.node_id
        shared = False  # holds a victim this plan already chose
        blocked = False
        for j in self.fleet.jobs_on(i):
            pj = j.placement
            gs = pj[0][1] if len(pj) == 1 else gpus_on(j, nid)
            c = len(gs) if allp else sum(1 for u in gs if u in pl)
            if j.preemption_notice_at is not None or j.job_id in gone or j.job_id in chosen:
                avail += c
                shared = shared or j.job_id in chosen
                continue
            good = ok.get(j.job_id)
            if good is None:
                good = ok[j.job_id] = eligible(j)
            if self.iso:
                o = iso_key(j.tenant, j.job_class)
                owners.add(o)
                if o != key:
                    if not good:
                        blocked = True
                    must.append(j)
                    avail += c
                    continue
            if good:
                opt.append((j, c))
        if not blocked and avail < g:
            opt.sort(key=lambda e: self._loss_key(e[0]))
            for j, c in opt:
                must.append(j)
                avail += c
                if avail >= g:
                    break
        if blocked or avail < g:
            if shared:
                return None
            return frozenset(owners) if self.iso else NOBODY
        return must

    def _fit(
        self, cands: list[int], key: str, g: int, n: int, victims: set[str] | dict[str, RunningJob]
    ) -> tuple[list[int], int] | None:
        """The first n of `cands` with g GPUs for owner `key` once `victims` leave,
        and the GPUs under notice on them; None if fewer than n."""
        out: list[int] = []
        under = 0
        for i in cands:
            nd = self.nodes[i]
            pl = nd.placeable
            allp = len(pl) == len(nd.gpus)
            avail = self.placer.free[i]
            u = 0
            for j in self.fleet.jobs_on(i):
                noticed = j.preemption_notice_at is not None or j.job_id in self.gone
                if noticed or j.job_id in victims:
                    gs = gpus_on(j, nd.node_id)
                    c = len(gs) if allp else sum(1 for x in gs if x in pl)
                    avail += c
                    if noticed:
                        u += c
                elif self.iso and iso_key(j.tenant, j.job_class) != key:
                    break
            else:
                if avail >= g:
                    out.append(i)
                    under += u
                    if len(out) == n:
                        return out, under
        return None

    # --- a whole plan

    def plan(
        self,
        model: str,
        key: str,
        g: int,
        n: int,
        pools: list[Pool],
        allowed: tuple[int, ...],
        resvs: tuple[str | None, ...],
        internal_spare: int,
        relaxed: bool = False,
        exclude: frozenset[int] | set[int] = frozenset(),
    ) -> Plan | None:
        """n nodes of `model` giving g GPUs each to owner `key` after preempting
        work of the `allowed` classes (internal work only up to `internal_spare`
        GPUs), or None. Nodes must be carved out for one of `resvs` (None:
        general capacity). Nothing is changed: the caller commits the plan."""
        memo = (model, key, allowed, resvs, relaxed, bool(exclude))
        failed = self._failed.get(memo)
        if failed:
            for fg, fn in failed.items():
                if g >= fg and n >= fn:
                    return None
        now, min_rt = self.now, self.min_runtime_s
        spare = [internal_spare]

        def eligible(j: RunningJob) -> bool:
            if j.job_class not in allowed:
                return False
            if j.job_class == INTERNAL and j.gpu_count > spare[0]:
                return False
            return relaxed or now - j.started_at >= min_rt

        sig = (model, g, allowed, resvs, relaxed)
        dead = self._dead.setdefault(sig, {})
        small = self._small.setdefault(g, set())
        claimed, gen = self.placer.claimed, self._gen

        def skip(i: int) -> bool:
            if i in claimed or i in small:
                return True
            d = dead.get(i)
            return d is not None and d[0] == gen.get(i, 0) and key not in d[1]

        own = next((r for r in resvs if r is not None), None)
        chosen: dict[str, RunningJob] = {}
        ok: dict[str, bool] = {}
        nodes: list[int] = []
        visited: set[int] = set()
        resv, fresh, iso = self.placer.resv, self.placer.fresh, self.iso
        for i in self._candidates(model, pools, g, allowed, own, (sig, key), skip):
            if i in visited or i in exclude:
                continue
            visited.add(i)
            node = self.nodes[i]
            if len(node.placeable) < g:
                small.add(i)
                continue
            if node.cordoned or node.gpu_model != model or resv.get(i) not in resvs:
                dead[i] = (gen.get(i, 0), NOBODY)
                continue
            if not may_run_on(node.sandboxed, key):  # preempting there would buy the job nothing
                dead[i] = (gen.get(i, 0), INTERNAL_ONLY)
                continue
            fk = fresh.get(i)
            if iso and fk is not None and fk != key:
                dead[i] = (gen.get(i, 0), frozenset((fk,)))
                continue
            got = self._node(i, key, g, ok, chosen, eligible)
            if got is None:
                continue
            if isinstance(got, frozenset):
                # Whoever holds no work there is refused alike; an owner of work there may fare better.
                dead[i] = (gen.get(i, 0), got - {key})
                continue
            nodes.append(i)
            for v in got:
                chosen[v.job_id] = v
                if v.job_class == INTERNAL:
                    spare[0] -= v.gpu_count
                    ok.clear()  # internal eligibility depends on the spare left
            if len(nodes) == n:
                break
        else:
            failed = self._failed.setdefault(memo, {})
            failed[g] = min(n, failed.get(g, n))
            return None
        # Minimal set: drop, most expensive first, every victim the plan can do without; the
        # nodes may change (a victim that spans nodes can stand in for others).
        cands = list(nodes)
        for v in chosen.values():
            for nid, _ in v.placement:
                ix = self.fleet.index(nid)
                if ix is not None and ix not in visited and self._usable(ix, model, key, g, resvs, exclude):
                    visited.add(ix)
                    cands.append(ix)
        keep = dict(chosen)
        for v in sorted(chosen.values(), key=self._loss_key, reverse=True):
            del keep[v.job_id]
            if self._fit(cands, key, g, n, keep) is None:
                keep[v.job_id] = v
        fit = self._fit(cands, key, g, n, keep)
        assert fit is not None
        victims = list(keep.values())
        young = [v for v in victims if now - v.started_at < min_rt]
        wait = max((v.started_at + min_rt - now for v in young), default=0.0)
        return Plan(fit[0], victims, fit[1], wait, young)

    def _usable(
        self, i: int, model: str, key: str, g: int, resvs: tuple[str | None, ...], exclude: frozenset[int] | set[int]
    ) -> bool:
        """Node i may take part in a plan at all (not claimed, right model and reservation, room enough,
        sandboxed if the owner is a tenant)."""
        node = self.nodes[i]
        if i in self.placer.claimed or i in exclude or node.cordoned or node.gpu_model != model:
            return False
        if not may_run_on(node.sandboxed, key):
            return False
        if len(node.placeable) < g or self.placer.resv.get(i) not in resvs:
            return False
        fk = self.placer.fresh.get(i)
        return not (self.iso and fk is not None and fk != key)
