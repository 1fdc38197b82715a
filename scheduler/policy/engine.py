"""schedule(): one pure, deterministic scheduling pass (docs/DESIGN.md section 3).

Order of work in a pass:
1. preempt work on GPUs that are no longer placeable, and reserved work whose
   contract is over;
2. queued jobs class by class (internal, reserved, on-demand, spot); within a
   class by weighted fair share, FIFO within a tenant (fairshare.py);
3. each job: admission (shape, contract, power), then a gang placement in the
   free capacity its class may use (placement.py); if that fails, a
   preemption plan where its class may preempt (preempt.py); preempted GPUs
   are only free once the executor releases them, so the job stays pending
   and the plan's nodes are its room, held for it in this pass and the next
   ones until it is placed there (rooms.py);
4. early reclaim warnings for contracts that start within the horizon.

Who may preempt whom: internal within its floor preempts spot, then
on-demand; internal above its floor and on-demand preempt spot only; a reserved
job inside its active contract preempts spot (lent capacity first), then
internal work above the floor. Reserved work is never preempted while its
contract is active.

Backfill without runtime estimates (EASY style, by space instead of time):
the first job per GPU model that does not fit holds the nodes closest to
fitting it (every node with a slice free, then the fullest others) for the
rest of the pass. Later, smaller jobs may start anywhere else, so they never
sit on capacity the blocked job is waiting for; later blocked jobs hold
nothing (one reservation per model, as in EASY backfilling). The site power
budget works the same way: once a job is blocked by it, no later job starts,
since none of the power it waits for can be promised back without runtimes.
"""

from __future__ import annotations

import logging

from neocloud.scheduler.policy import explain
from neocloud.scheduler.policy.contracts import ContractBook
from neocloud.scheduler.policy.early_warning import RESERVED_VICTIMS, warn, warn_future_contracts
from neocloud.scheduler.policy.fairshare import Shares, serve
from neocloud.scheduler.policy.fleet import INTERNAL, ON_DEMAND, RESERVED, SPOT, FleetState, is_internal
from neocloud.scheduler.policy.placement import Placer, Pool
from neocloud.scheduler.policy.preempt import Plan, Planner, jobs_on_unplaceable_gpus, unplaceable_preemptions
from neocloud.scheduler.policy.rooms import Rooms
from neocloud.scheduler.policy.types import (
    INTERNAL_TENANT,
    Contract,
    Decision,
    JobClass,
    JobRequest,
    Placement,
    PolicyInput,
    Preemption,
    ReclaimWarning,
    RunningJob,
)

logger = logging.getLogger(__name__)

__all__ = ["jobs_on_unplaceable_gpus", "schedule"]

CLASS_ORDER = (INTERNAL, RESERVED, ON_DEMAND, SPOT)

# Victim classes per beneficiary, lowest class first.
FLOOR_VICTIMS = (SPOT, ON_DEMAND)
SPOT_VICTIMS = (SPOT,)


def schedule(inp: PolicyInput) -> Decision:
    """Placements, preemptions, warnings and pending reasons for one pass."""
    return _Pass(inp).run()


# A frozen dataclass's __init__ sets each field through object.__setattr__; a pass builds thousands of
# placements, so _Pass._consider fills the slots directly (the same object, at half the cost; a test checks
# that these are all of Placement's fields).
_new = object.__new__
_set_job_id = vars(Placement)["job_id"].__set__  # (the slots' member descriptors)
_set_placement = vars(Placement)["placement"].__set__
_set_lent = vars(Placement)["on_lent_capacity"].__set__


class _Pass:
    def __init__(self, inp: PolicyInput) -> None:
        self.inp = inp
        self.cfg = cfg = inp.config
        self.fleet = fleet = FleetState(inp)
        self.book = ContractBook(inp.contracts, inp.now, fleet.contract_gpus, fleet.contract_power_w)
        self.placer = Placer(inp, fleet, self.book)
        self.planner = Planner(inp, fleet, self.placer)
        self.rooms = Rooms(inp, fleet, self.placer, self.planner.gone)  # (claims them before anything is placed)
        self.shares = Shares(
            inp.usage_gpu_s,
            fleet.tenant_gpus,
            fleet.tenant_power_w,
            fleet.fleet_gpus,
            cfg.site_power_budget_w,
            cfg.fair_share_half_life_s,
            cfg.tenant_weights,
        )
        self.placements: list[Placement] = []
        self.preemptions: list[Preemption] = []
        self.warnings: dict[str, ReclaimWarning] = {}
        self.pending: dict[str, str] = {}
        self.budget_w = cfg.site_power_budget_w
        self.models = tuple(fleet.models)
        self.model_set = frozenset(fleet.models)
        self.draw_w = fleet.measured_w  # measured now plus what this pass starts
        self.power_held = False  # a job blocked by the site budget holds what is left
        self.internal = fleet.internal_gpus  # internal GPUs running, starting, or being made room for
        self.holding: set[str] = set()  # models where the first blocked job holds nodes
        self.future: list[tuple[JobRequest, Contract]] = []  # reserved jobs of contracts about to start
        self.initial_free: dict[str, int] = {}
        for p in self.placer.pools.values():
            self.initial_free[p.key[0]] = self.initial_free.get(p.key[0], 0) + p.gpus
        self.cls = INTERNAL  # the class being served
        self.class_start = 0  # placements made before the class being served
        self.placed_by_tenant: dict[str, int] = {}  # in the class being served
        self._pool_lists: dict[tuple[str | None, str, str], list[Pool]] = {}
        self._routes: dict[tuple[str, str | None, str | None], tuple[str, tuple[list[Pool], ...]]] = {}
        self._capacity_text: dict[tuple[object, ...], str] = {}

    # --- the pass

    def run(self) -> Decision:
        self._preempt_unplaceable()
        self._preempt_outside_contract()
        by_class: list[list[JobRequest]] = [[] for _ in range(INTERNAL + 1)]
        for job in self.inp.queue:
            by_class[job.job_class].append(job)
        for cls in CLASS_ORDER:
            jobs = by_class[cls]
            if not jobs:
                continue
            self.cls = cls
            self._routes = {}
            self.class_start = len(self.placements)
            self.placed_by_tenant = {}
            serve(jobs, self.shares, self._consider)
        spare = max(0, self.internal - self.cfg.internal_floor_gpus)
        warn_future_contracts(self.future, self.book, self.fleet, self.placer, self.planner, spare, self.warnings)
        gone = self.planner.gone
        return Decision(
            placements=tuple(self.placements),
            preemptions=tuple(self.preemptions),
            warnings=tuple(w for w in self.warnings.values() if w.job_id not in gone),
            pending=self.pending,
            rooms=self.rooms.out,
        )

    def _retire(self, j: RunningJob) -> None:
        """j was preempted in this pass: its GPUs count as free for later plans."""
        self.planner.note_gone(j)
        if is_internal(j.tenant, j.job_class):
            self.internal -= j.gpu_count

    def _preempt_unplaceable(self) -> None:
        jobs = [j for j in self.fleet.unplaceable if j.preemption_notice_at is None]
        self.preemptions.extend(unplaceable_preemptions(jobs, self.cfg.max_requeues))
        for j in jobs:
            self._retire(j)

    def _preempt_outside_contract(self) -> None:
        """Reserved work may run only while its contract is active."""
        for j in self.fleet.reserved_jobs:
            why = self.book.inactive(j.contract_id)
            if why is not None and j.preemption_notice_at is None and j.job_id not in self.planner.gone:
                self.preemptions.append(Preemption(j.job_id, why, requeue=False))
                self._retire(j)

    # --- one queued job

    def _consider(self, job: JobRequest) -> bool:
        """Place the job (of the class being served), make room for it, or say why it waits; True if placed."""
        k = job.gpus
        g = job.gpus_per_node
        if g <= 0 or k <= 0 or k % g:
            self.pending[job.job_id] = explain.invalid_shape(k, g)
            return False
        cls = self.cls
        model = job.gpu_model
        cid: str | None = None
        if cls == RESERVED:
            contract, model, why = self.book.admit(job)
            if why is not None:
                self.pending[job.job_id] = why
                now = self.inp.now
                if contract is not None and now < contract.start <= now + self.cfg.reclaim_warning_s:
                    self.future.append((job, contract))
                return False
            cid = job.contract_id
        need_w = k * job.expected_power_w_per_gpu
        if self.power_held:
            self.pending[job.job_id] = explain.site_power_held(need_w)
            return False
        held_w = self.book.held_total_w if cid is None else self.book.held_power_w(cid)
        if self.draw_w + need_w > self.budget_w - held_w:
            limit = self.budget_w - held_w
            self.pending[job.job_id] = explain.site_power(self.draw_w + need_w - limit, self.budget_w, held_w)
            if need_w <= self.budget_w:  # it could start once power frees up: hold the rest for it
                self.power_held = True
            return False
        route = self._routes.get((job.tenant, model, cid))
        if route is None:
            route = self._route(cls, job.tenant, model, cid)
        key, lists = route
        n = k // g
        entries = self.rooms.place(job, key) if self.rooms.of else None
        if isinstance(entries, int):  # preempted work is still leaving its room: it waits for that room
            self.pending[job.job_id] = explain.awaiting_release(entries)
            self._count_waiting(job, cls, need_w, cid)
            return False
        lent = False  # (only what spot borrows is lent; never a room, as spot never preempts)
        if entries is None:
            place = self.placer.place
            for pools in lists:
                got = place(pools, g, n, key)
                if got is not None:  # (its flag says carved out: the holder's own, not lent)
                    entries = got[0]
                    break
            else:
                got = self._borrow(job, cls, key, model, g, n, need_w, cid)
                if got is None:
                    return False
                entries, lent = got
        # Placed (inline: this runs once per placement).
        pl = _new(Placement)  # (see _new)
        _set_job_id(pl, job.job_id)
        _set_placement(pl, entries)
        _set_lent(pl, lent)
        self.placements.append(pl)
        self.draw_w += need_w  # (fairshare.serve charges the tenant)
        if cid is not None:
            self.book.charge(cid, k, need_w)
        if key == INTERNAL_TENANT:
            self.internal += k
        tenant = job.tenant
        self.placed_by_tenant[tenant] = self.placed_by_tenant.get(tenant, 0) + 1
        return True

    def _borrow(
        self, job: JobRequest, cls: int, key: str, model: str | None, g: int, n: int, need_w: float, cid: str | None
    ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], bool] | None:
        """The job does not fit in the capacity it may take: spot borrows capacity held for contracts; else it
        waits (or has room made for it): None."""
        if model is None:
            models: tuple[str, ...] = self.models
        elif model in self.model_set:
            models = (model,)
        else:
            self.pending[job.job_id] = explain.unknown_model(model)
            return None
        if cls == SPOT and self.placer.carved:  # spot may borrow capacity reserved but unused
            for m in models:
                if m in self.placer.carved:
                    got = self.placer.place(self.placer.spot(m, key), g, n, key)
                    if got is not None:
                        return got
        self._blocked(job, cls, key, model, models, g, n, need_w, cid)
        return None

    def _blocked(
        self,
        job: JobRequest,
        cls: int,
        key: str,
        model: str | None,
        models: tuple[str, ...],
        g: int,
        n: int,
        need_w: float,
        cid: str | None,
    ) -> None:
        """The job does not fit in free capacity: make room for it if its class may, else say why it waits."""
        k = job.gpus
        fits: list[str] = []
        largest = 0  # nodes of the best model that have room for a slice
        for m in models:  # (a loop: a comprehension here would make g and n closure cells on every call)
            count = self.fleet.static(m, g)
            largest = max(largest, count)
            if count >= n:
                fits.append(m)
        if not fits:
            self.pending[job.job_id] = explain.never_fits(k, model, g, largest)
            return
        allowed, spare = self._victims(cls, k)
        if allowed:
            resvs: tuple[str | None, ...] = (cid, None) if cid is not None else (None,)
            for relaxed in (False, True) if cls in (INTERNAL, RESERVED) else (False,):
                for m in fits:
                    pools = self._pools(cls, m, key, cid)
                    plan = self.planner.plan(m, key, g, n, pools, allowed, resvs, spare, relaxed)
                    if plan is not None:
                        self._commit_plan(job, cls, need_w, cid, plan, relaxed, allowed is FLOOR_VICTIMS)
                        return
        self._wait(job, cls, key, fits[0], model, g, n, cid, bool(allowed))

    def _route(self, cls: int, tenant: str, model: str | None, cid: str | None) -> tuple[str, tuple[list[Pool], ...]]:
        """A job's isolation owner and the pools lists it may take without borrowing, one per GPU model it may
        run on (cached for the class being served)."""
        key = INTERNAL_TENANT if cls == INTERNAL or tenant == INTERNAL_TENANT else tenant
        models = self.models if model is None else (model,) if model in self.model_set else ()
        route = self._routes[(tenant, model, cid)] = (key, tuple(self._pools(cls, m, key, cid) for m in models))
        return route

    def _pools(self, cls: int, model: str, key: str, cid: str | None) -> list[Pool]:
        """The pools a job may take without borrowing, in preference order (cached)."""
        ck = (cid, model, key)
        pools = self._pool_lists.get(ck)
        if pools is None:
            pools = self.placer.holder(model, key, cid) if cid is not None else self.placer.general(model, key)
            self._pool_lists[ck] = pools
        return pools

    def _victims(self, cls: int, k: int) -> tuple[tuple[int, ...], int]:
        floor = self.cfg.internal_floor_gpus
        if cls == INTERNAL:
            return (FLOOR_VICTIMS if self.internal + k <= floor else SPOT_VICTIMS), 0
        if cls == RESERVED:
            return RESERVED_VICTIMS, max(0, self.internal - floor)
        if cls == ON_DEMAND:
            return SPOT_VICTIMS, 0
        return (), 0

    def _commit_plan(
        self, job: JobRequest, cls: int, need_w: float, cid: str | None, plan: Plan, relaxed: bool, floor: bool
    ) -> None:
        for i in plan.nodes:
            self.placer.claim(i)
        self._count_waiting(job, cls, need_w, cid)
        if relaxed:
            # When the youngest victim may go: a time, stable from pass to pass (now + wait_s drifts in float).
            at = max((v.started_at for v in plan.young), default=self.inp.now - self.cfg.min_runtime_s)
            at += self.cfg.min_runtime_s
            warn(self.warnings, plan.victims, explain.reclaim_soon(cls == RESERVED, cid, at))
            self.pending[job.job_id] = explain.awaiting_min_runtime(at)
            return
        counts: dict[JobClass, int] = {}
        for v in plan.victims:
            self.preemptions.append(
                Preemption(
                    v.job_id,
                    explain.preemption_reason(cls, cid, v.on_lent_capacity, floor),
                    for_job_id=job.job_id,
                    requeue=v.requeues < self.cfg.max_requeues,
                )
            )
            self._retire(v)
            counts[v.job_class] = counts.get(v.job_class, 0) + 1
        self.rooms.keep(job.job_id, plan.nodes)
        if counts:
            self.pending[job.job_id] = explain.preempting(counts)
        else:
            self.pending[job.job_id] = explain.awaiting_release(plan.under_notice_gpus)

    def _count_waiting(self, job: JobRequest, cls: int, need_w: float, cid: str | None) -> None:
        """A job that room is being made for counts against its contract and the internal floor as if placed."""
        if cid is not None:
            self.book.charge(cid, job.gpus, need_w)
        if cls == INTERNAL:
            self.internal += job.gpus

    def _wait(
        self,
        job: JobRequest,
        cls: int,
        key: str,
        model: str,
        shown: str | None,
        g: int,
        n: int,
        cid: str | None,
        may_preempt: bool,
    ) -> None:
        """Pending for capacity: say why; the first such job per model holds the nodes closest to fitting it."""
        pools = self._pools(cls, model, key, cid)
        ready = self.placer.ready(pools, g)
        lendable = cls != SPOT and self.placer.ready(self.placer.spot(model, key), g, n) >= n
        barred = self.placer.barred(model, key, g, n, ready) if self.placer.unsandboxed else 0
        ck = (job.gpus, shown, g, ready, lendable, may_preempt, barred)  # all the text depends on
        text = self._capacity_text.get(ck)
        if text is None:
            if lendable:
                text = explain.held_for_contracts(job.gpus, shown, g)
            elif barred:
                text = explain.unsandboxed(job.gpus, shown, g, barred)
            else:
                text = explain.capacity(job.gpus, shown, g, ready, g >= self.fleet.max_size)
                if may_preempt:
                    text = explain.cannot_preempt(text)
            self._capacity_text[ck] = text
        ahead = len(self.placements) - self.class_start - self.placed_by_tenant.get(job.tenant, 0)
        if ahead > 0 and self.initial_free.get(model, 0) >= job.gpus:
            text = explain.fair_share(ahead, text)
        if model not in self.holding:
            self.holding.add(model)
            held = self.placer.hold(pools, g, n)
            if held:
                text = explain.first_in_line(text, held)
        self.pending[job.job_id] = text
