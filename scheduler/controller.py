"""The control loop: executor events -> store, then one policy pass -> store and
executor. The store is the truth; the executor is told what the store says.

Each step:
1. GPUs whose last job was released and whose node's NVML shows none of its
   processes any more become placeable again (Ray's cancel leaves processes
   behind, ray-project/ray#23638; we do not hand such GPUs on);
2. executor events are applied: starts, exits (succeeded / failed / preempted
   -> requeued or failed / cancelled / lost -> requeued), checkpoints, releases;
3. cancellations the API recorded are carried out;
4. the policy decides on (inventory, health, power, contracts, running, queue,
   usage); preemptions are noted in the store, then signalled; placements are
   recorded in the store, then started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from neocloud.domain.errors import NeocloudError
from neocloud.domain.hours import hour_of, hour_pieces
from neocloud.scheduler.executor.types import (
    END_CANCELLED,
    END_EXITED,
    END_LOST,
    END_MAX_RUNTIME,
    END_PREEMPTED,
    Checkpoint,
    ExecJob,
    Executor,
    ExecutorEvent,
    Exited,
    JobLost,
    NodeLost,
    Released,
    Started,
)
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.inventory import node_views, processes_gone
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.metering.shortfall import undelivered_gpus
from neocloud.scheduler.metering.usage import ContractShortfall
from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Decision, JobRequest, NodeView, PolicyInput, RunningJob
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Allocation, Job, JobState
from neocloud.scheduler.store.shortfalls import ShortfallStore

logger = logging.getLogger(__name__)

# Telemetry up to a day late (an agent cut off, spooling) still finds its allocations.
BOOK_HORIZON_S = 24 * 3600.0
BOOK_MARGIN_S = 5.0
BOOK_REBUILD_S = 600.0
MAX_SHORTFALL_STEP_S = 60.0


Running = list[tuple[Job, list[Allocation]]]  # what JobStore.running() returns


@dataclass(slots=True)
class _Cleanup:
    """GPUs a released job held, not placeable until NVML shows none of its pids."""

    gpu_uuids: tuple[str, ...]
    pids: frozenset[int]
    released_us: int | None  # None until the executor reports the release
    # The ended job as the policy sees it until its GPUs are confirmed free: under notice, so
    # they count as freeing soon, not as lost capacity to preempt more work for (or, for a
    # reserved job, as capacity its contract lacks).
    holder: RunningJob | None = None


@dataclass(slots=True)
class _Tracking:
    """What the controller learns about a running job from the executor."""

    ranks: int
    pids: set[int] = field(default_factory=set)
    exits: dict[int, Exited] = field(default_factory=dict)
    lost_at: float | None = None
    stopping: bool = False  # cancel or preemption already signalled


@dataclass(slots=True)
class ControllerStats:
    steps: int = 0
    placements: int = 0
    preemptions: int = 0
    warnings: int = 0
    step_errors: int = 0
    last_step_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ControllerView:
    """What the last pass saw, for the exporter (replaced whole, read without locks)."""

    power_budget_w: float = float("inf")
    allocated: dict[tuple[str, str], int] = field(default_factory=dict)  # (class, tenant) -> GPUs
    undelivered: dict[tuple[str, str], int] = field(default_factory=dict)  # (contract, tenant) -> GPUs


class Controller:
    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        executor: Executor,
        clock: Callable[[], float] = time.time,
        interval_s: float = 0.5,
        shortfalls: ShortfallStore | None = None,
    ) -> None:
        self.store = store
        self.shortfalls = shortfalls
        self._last_step_at: float | None = None
        self.fleet = fleet
        self.executor = executor
        self.clock = clock
        self.interval_s = interval_s
        self.pending: dict[str, str] = {}  # job id -> why it waits (from the last pass)
        self.warned: dict[str, str] = {}  # job id -> reclaim warning
        self.cleanups: dict[str, _Cleanup] = {}
        self.stats = ControllerStats()
        self.view = ControllerView()
        self._jobs: dict[str, _Tracking] = {}
        self._ray_nodes: frozenset[str] | None = None
        self._dead_nodes: dict[str, float] = {}  # node -> when its Ray node died
        self._cordoned: frozenset[str] = frozenset()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="neocloud-controller")
        # Until the first pass has read the store, ingest attributes no energy.
        fleet.attributor.book = AllocationBook(complete_to=float("-inf"))
        self._book_version, self._book_rebuild_at = -1, 0.0

    # --- start-up ---------------------------------------------------------------------------------

    def recover(self) -> None:
        """After a restart: re-attach to the jobs still running on Ray; the ones
        gone while we were down are closed now and requeued."""
        active = self.store.running()
        found = self.executor.reattach([job.job_id for job, _ in active]) if active else set()
        now = self.clock()
        for job, allocations in active:
            if job.job_id in found:
                self._jobs[job.job_id] = _Tracking(ranks=len(allocations), stopping=job.state is JobState.PREEMPTING)
                logger.info("re-attached to job %s", job.job_id)
            else:
                logger.warning("job %s was running but is gone from Ray; requeueing it", job.job_id)
                self._requeue_or_fail(job, now, END_LOST, "its runners were gone after a scheduler restart")

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Step forever; each step runs on the controller's own thread (store and
        executor calls block). Telemetry is read there too, through copies that
        the GIL makes atomic (sorted(), list()), never by iterating live dicts."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self.recover)
        while True:
            try:
                await loop.run_in_executor(self._thread, self.step)
            except Exception:
                # A failing pass must not end the scheduler: log it, try again.
                self.stats.step_errors += 1
                logger.exception("controller step failed")
            await asyncio.sleep(self.interval_s)

    def views(self, now: float, running: Running | None = None) -> tuple[NodeView, ...]:
        """The inventory the policy may use now. GPUs of released jobs wait for
        NVML, unless Ray has already given them to a running job."""
        running = self.store.running() if running is None else running
        held = {u for _, allocations in running for a in allocations for u in a.gpu_uuids}
        # GPUs of an ended job stay held by it, under notice, in the policy's view (_policy_input);
        # those of a job released without our asking are simply not placeable.
        awaiting = {u for c in list(self.cleanups.values()) if c.holder is None for u in c.gpu_uuids} - held
        return node_views(self.fleet, now, self._ray_nodes, self._cordoned, awaiting)

    def step(self) -> Decision:
        started = time.monotonic()
        now = self.clock()
        for job_id, c in list(self.cleanups.items()):
            if c.released_us is not None and processes_gone(self.fleet, c.gpu_uuids, c.pids, c.released_us):
                del self.cleanups[job_id]
                logger.info("NVML shows no process of job %s left: its GPUs are free", job_id)
        events = self.executor.poll()
        # Losses first: an exit in the same batch must know its node died.
        for event in sorted(events, key=lambda e: not isinstance(e, NodeLost | JobLost)):
            self._apply(event)
        running = self.store.running()
        self._carry_out_cancellations(running)
        alive = frozenset(n for n, info in self.executor.nodes().items() if info.alive)
        for node_id in (self._ray_nodes or frozenset()) - alive:
            self._dead_nodes.setdefault(node_id, now)  # seen dead before the executor's NodeLost
        for node_id in [n for n in self._dead_nodes if n in alive]:
            del self._dead_nodes[node_id]  # it came back
        self._ray_nodes = alive
        self._cordoned = self.store.cordoned()
        views = self.views(now, running)
        logger.debug("placeable GPUs: %s", {v.node_id: len(v.placeable) for v in views})
        policy_input = self._policy_input(now, views, running)
        decision = schedule(policy_input)
        self._enact(decision, now, views)
        self._publish_book(now)
        missing = undelivered_gpus(policy_input.contracts, policy_input.nodes, policy_input.running, now)
        self._record_shortfalls(policy_input, missing, now)
        self._update_view(policy_input, missing)
        self.stats.steps += 1
        self.stats.last_step_s = time.monotonic() - started
        return decision

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self.shortfalls is not None:
            self.shortfalls.close()

    def _update_view(self, policy_input: PolicyInput, missing: dict[str, int]) -> None:
        allocated: dict[tuple[str, str], int] = {}
        for job in policy_input.running:
            key = (job.job_class.name.lower(), job.tenant)
            allocated[key] = allocated.get(key, 0) + sum(len(uuids) for _, uuids in job.placement)
        tenants = {c.contract_id: c.tenant for c in policy_input.contracts}
        self.view = ControllerView(
            policy_input.config.site_power_budget_w, allocated, {(c, tenants[c]): n for c, n in missing.items()}
        )

    def _record_shortfalls(self, policy_input: PolicyInput, missing: dict[str, int], now: float) -> None:
        """Reserved GPUs the fleet could not deliver since the last step, for SLA credits.
        A gap longer than MAX_SHORTFALL_STEP_S (the scheduler was down) is not guessed at."""
        last, self._last_step_at = self._last_step_at, now
        if self.shortfalls is None or last is None or not 0 < now - last <= MAX_SHORTFALL_STEP_S or not missing:
            return
        tenants = {c.contract_id: c.tenant for c in policy_input.contracts}
        rows = []
        for a, b in hour_pieces(last, now):
            rows += [
                ContractShortfall(cid, tenants[cid], hour_of(a), round(gpus * (b - a) * 1000))
                for cid, gpus in missing.items()
            ]
        self.shortfalls.add(rows)
        logger.warning(
            "reserved capacity not delivered: %s", ", ".join(f"{c} short {n} GPUs" for c, n in missing.items())
        )

    def _publish_book(self, now: float) -> None:
        """Give ingest the allocations it attributes energy by. Final only up to a
        margin before now: an exit the executor has yet to report may close an
        allocation a little in the past."""
        # Rebuilt when allocations changed (or to forget old ones), else only moved forward in time:
        # reading a day of allocations every pass is what a large fleet cannot afford.
        version = self.store.write_count("allocations")
        if version != self._book_version or now >= self._book_rebuild_at:
            allocations = self.store.allocations_since(now - BOOK_HORIZON_S)
            self.fleet.attributor.book = AllocationBook(allocations, complete_to=now - BOOK_MARGIN_S)
            self._book_version, self._book_rebuild_at = version, now + BOOK_REBUILD_S
        else:
            self.fleet.attributor.book = self.fleet.attributor.book.final_to(now - BOOK_MARGIN_S)

    # --- executor events --------------------------------------------------------------------------

    def _apply(self, event: ExecutorEvent) -> None:
        logger.debug("executor event %s", event)
        try:
            if isinstance(event, Started):
                self._tracking(event.job_id).pids.add(event.pid)
                self.store.set_allocation_gpus(event.job_id, event.node_id, event.gpu_uuids)
            elif isinstance(event, Exited):
                tracking = self._tracking(event.job_id)
                tracking.exits[event.rank] = event
                if len(tracking.exits) >= tracking.ranks:
                    self._ended(event.job_id, tracking)
            elif isinstance(event, JobLost):
                self._tracking(event.job_id).lost_at = event.at
                logger.warning("job %s lost a rank: %s", event.job_id, event.reason)
            elif isinstance(event, NodeLost):
                self._dead_nodes[event.node_id] = min(event.at, self._dead_nodes.get(event.node_id, event.at))
                logger.error("Ray node %s died at %s", event.node_id, event.at)
            elif isinstance(event, Checkpoint):
                self.store.record_checkpoint(event.job_id, event.at)
            elif isinstance(event, Released):
                self._released(event)
        except NeocloudError as e:
            logger.error("could not apply %s: %s", event, e)

    def _tracking(self, job_id: str) -> _Tracking:
        tracking = self._jobs.get(job_id)
        if tracking is None:
            tracking = _Tracking(ranks=max(1, len(self.store.allocations(job_id, open_only=True))))
            self._jobs[job_id] = tracking
        return tracking

    def _ended(self, job_id: str, tracking: _Tracking) -> None:
        """Every rank has exited: settle the job in the store, then release it. Until
        the release is done and NVML agrees, its GPUs and the job itself stay out of
        the policy's reach (a requeued job must not start twice on Ray)."""
        job = self.store.get(job_id)
        open_allocations = self.store.allocations(job_id, open_only=True)
        uuids = tuple(u for a in open_allocations for u in a.gpu_uuids)
        placement = tuple((a.node_id, a.gpu_uuids) for a in open_allocations)
        now = self.clock()
        holder = RunningJob(
            job_id, job.tenant, job.job_class, placement, job.started_at or now,
            contract_id=job.spec.contract_id, preemption_notice_at=now,
        )  # fmt: skip
        self.cleanups[job_id] = _Cleanup(uuids, frozenset(tracking.pids), None, holder)
        # A rank on a node that died was lost, whatever stopped the others (the
        # policy may have preempted the job for its vanished GPUs first).
        died = [self._dead_nodes[a.node_id] for a in open_allocations if a.node_id in self._dead_nodes]
        if died and tracking.lost_at is None:
            tracking.lost_at = min(died)
        exits = sorted(tracking.exits.values(), key=lambda e: e.rank)
        reasons = {e.end_reason for e in exits}
        at = min((e.at for e in exits if e.at is not None), default=self.clock())
        if job.state in (JobState.RUNNING, JobState.PREEMPTING):
            if tracking.lost_at is not None or END_LOST in reasons:
                self._requeue_or_fail(job, tracking.lost_at or at, END_LOST, "its node was lost")
            elif END_PREEMPTED in reasons:
                self._requeue_or_fail(job, at, END_PREEMPTED, "preempted")
            elif END_CANCELLED in reasons or job.cancel_requested:
                self.store.finish(job_id, JobState.CANCELLED, None, "cancelled by request", now=at)
            elif END_MAX_RUNTIME in reasons:
                self.store.finish(job_id, JobState.FAILED, None, "stopped at its maximum run time", now=at)
            else:
                codes = [e.exit_code for e in exits]
                ok = reasons == {END_EXITED} and all(c == 0 for c in codes)
                state = JobState.SUCCEEDED if ok else JobState.FAILED
                worst = next((c for c in codes if c != 0), 0)
                self.store.finish(job_id, state, worst, "" if ok else f"exit codes {codes}", now=at)
        self.executor.release(job_id)

    def _requeue_or_fail(self, job: Job, at: float, end_reason: str, why: str) -> None:
        self.store.close_allocations(job.job_id, at, end_reason)
        limit = self.store.policy_config().max_requeues
        if job.spec.requeue_on_preempt and job.requeues < limit:
            self.store.requeue(job.job_id, now=at, reason=why)
        else:
            message = f"{why}; not requeued ({job.requeues} requeues of {limit} allowed)"
            self.store.finish(job.job_id, JobState.FAILED, None, message, now=at)

    def _released(self, event: Released) -> None:
        tracking = self._jobs.pop(event.job_id, None)
        pids = set(event.pids) | (tracking.pids if tracking else set())
        pending = self.cleanups.get(event.job_id)
        holder = None
        if pending is None:  # released without our asking (e.g. reattached after a restart)
            allocations = self.store.allocations(event.job_id)
            last_start = max((a.start for a in allocations), default=0.0)
            uuids = tuple(u for a in allocations if a.start == last_start for u in a.gpu_uuids)
        else:
            uuids, holder = pending.gpu_uuids, pending.holder
        self.cleanups[event.job_id] = _Cleanup(uuids, frozenset(pids), round(self.clock() * 1e6), holder)
        if not event.verified:
            logger.warning("job %s released without every runner checking its processes; NVML decides", event.job_id)

    def _carry_out_cancellations(self, running: Running) -> None:
        for job, _ in running:
            tracking = self._tracking(job.job_id)
            if job.cancel_requested and not tracking.stopping:
                tracking.stopping = True
                self.executor.cancel(job.job_id, job.spec.grace_s)

    # --- policy -----------------------------------------------------------------------------------

    def _policy_input(self, now: float, views: tuple[NodeView, ...], running_jobs: Running) -> PolicyInput:
        config = self.store.policy_config()
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
        running += tuple(c.holder for c in list(self.cleanups.values()) if c.holder is not None)
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
            for job in self.store.queued()
            if job.job_id not in self.cleanups  # still being released from its last run
        )
        # Usage over one half-life stands in for the decayed total.
        usage = self.store.usage_gpu_seconds_since(now - config.fair_share_half_life_s, now)
        contracts = tuple(c.as_policy() for c in self.store.list_contracts())
        return PolicyInput(now, views, contracts, running, queue, usage, config)

    def _enact(self, decision: Decision, now: float, views: tuple[NodeView, ...]) -> None:
        for preemption in decision.preemptions:
            tracking = self._tracking(preemption.job_id)
            if tracking.stopping:
                continue
            job = self.store.notify_preemption(preemption.job_id, now, preemption.reason)
            tracking.stopping = True
            self.executor.preempt(job.job_id, job.spec.grace_s)
            self.stats.preemptions += 1
            logger.info("preempting job %s: %s", job.job_id, preemption.reason)
        inventory = {v.node_id: list(v.gpus) for v in views}
        for placement in decision.placements:
            job = self.store.get(placement.job_id)
            allocations = self.store.start(job.job_id, placement.placement, now)
            self._jobs[job.job_id] = _Tracking(ranks=len(allocations))
            spec = job.spec
            exec_job = ExecJob(
                job_id=job.job_id,
                command=list(spec.command) if spec.command else None,
                entrypoint=spec.entrypoint,
                env=dict(spec.env),
                grace_s=spec.grace_s,
                max_runtime_s=spec.max_runtime_s,
            )
            try:
                self.executor.start(exec_job, [(n, list(u)) for n, u in placement.placement], inventory)
            except NeocloudError as e:
                logger.error("job %s could not start on Ray: %s", job.job_id, e)
                self.store.finish(job.job_id, JobState.FAILED, None, f"could not start: {e}", now=now)
                continue
            self.stats.placements += 1
        for warning in decision.warnings:
            if self.warned.get(warning.job_id) != warning.reason:
                logger.info("reclaim warning for job %s: %s", warning.job_id, warning.reason)
                self.stats.warnings += 1
                try:
                    self.executor.warn(warning.job_id, warning.reason)
                except NeocloudError as e:  # gone meanwhile: the next pass knows
                    logger.warning("job %s: reclaim warning not delivered: %s", warning.job_id, e)
        self.warned = {w.job_id: w.reason for w in decision.warnings}
        changed = {j: r for j, r in decision.pending.items() if self.pending.get(j) != r}
        if changed:  # `neocloud job ID` shows it as the job's message
            self.store.set_pending_reasons(changed)
        self.pending = dict(decision.pending)
