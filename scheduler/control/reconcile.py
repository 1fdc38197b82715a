"""Bringing the store and the controller's state in line with what Ray and NVML
report: executor events (starts, exits, losses, checkpoints, releases), GPUs
NVML shows free, Ray nodes alive or dead, cancellations the API recorded, and
after a restart the jobs still running on Ray."""

from __future__ import annotations

import logging
from collections.abc import Callable

from neocloud.domain.errors import NeocloudError
from neocloud.domain.faults import fault_point
from neocloud.scheduler.control.settle import REQUEUE, ending, settle
from neocloud.scheduler.control.state import Cleanup, ControllerStats, ControlState, Running, Tracking
from neocloud.scheduler.executor.types import (
    END_LOST,
    END_WATCHDOG_FAILED,
    Checkpoint,
    Executor,
    ExecutorEvent,
    Exited,
    JobLost,
    NodeLost,
    Released,
    Started,
)
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.inventory import processes_gone
from neocloud.scheduler.policy.types import RunningJob
from neocloud.scheduler.store.intents import StopIntent
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import ACTIVE_STATES, JobState

logger = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self,
        store: JobStore,
        fleet: Fleet,
        executor: Executor,
        state: ControlState,
        stats: ControllerStats,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.executor = executor
        self.state = state
        self.stats = stats
        self.clock = clock

    def recover(self, stopped_by: float) -> None:
        """After a restart: re-attach to the jobs still running on Ray; the ones
        gone while we were down are requeued, closed at `stopped_by` (the previous
        run's last sign of life: the tenant pays for none of the downtime)."""
        active = self.store.running()
        found = self.executor.reattach([job.job_id for job, _ in active]) if active else set()
        for job, allocations in active:
            if job.job_id in found:
                stopping = job.state is JobState.PREEMPTING
                self.state.jobs[job.job_id] = Tracking(ranks=len(allocations), stopping=stopping)
                logger.info("re-attached to job %s", job.job_id)
            else:
                logger.warning("job %s was running but is gone from Ray; requeueing it", job.job_id)
                why = "its runners were gone after a scheduler restart"
                settle(self.store, StopIntent(job.job_id, stopped_by, REQUEUE, END_LOST, why))

    def free_cleaned_gpus(self) -> None:
        """GPUs of released jobs whose node's NVML shows none of their processes become placeable."""
        for job_id, c in list(self.state.cleanups.items()):
            if c.released_us is not None and processes_gone(
                self.fleet, c.gpu_uuids, c.pids, c.released_us, c.pid_namespaces
            ):
                self.state.drop_cleanup(job_id)
                logger.info("NVML shows no process of job %s left: its GPUs are free", job_id)

    def apply_events(self) -> None:
        events = self.executor.poll()
        # Losses first: an exit in the same batch must know its node died.
        for event in sorted(events, key=lambda e: not isinstance(e, NodeLost | JobLost)):
            self._apply(event)

    def carry_out_cancellations(self, running: Running) -> None:
        for job, _ in running:
            tracking = self.state.tracking(job.job_id)
            if job.cancel_requested and not tracking.stopping:
                tracking.stopping = True
                self.executor.cancel(job.job_id, job.spec.grace_s)

    def observe_nodes(self, now: float) -> None:
        """The Ray nodes alive now (and since when the others are dead), and the operator's cordons."""
        state = self.state
        nodes = self.executor.nodes()
        alive = frozenset(n for n, info in nodes.items() if info.alive)
        state.unsandboxed = frozenset(n for n in alive if not nodes[n].sandboxed)
        for node_id in (state.ray_nodes or frozenset()) - alive:
            state.dead_nodes.setdefault(node_id, now)  # seen dead before the executor's NodeLost
        for node_id in [n for n in state.dead_nodes if n in alive]:
            del state.dead_nodes[node_id]  # it came back
        state.ray_nodes = alive
        state.cordoned = self.store.cordoned()

    # --- executor events --------------------------------------------------------------------------

    def _apply(self, event: ExecutorEvent) -> None:
        logger.debug("executor event %s", event)
        state = self.state
        if isinstance(event, Started | Exited | JobLost | Checkpoint) and event.job_id in state.removing:
            return  # an orphan being removed (repair.py): only its release matters
        try:
            if isinstance(event, Started):
                state.tracking(event.job_id).pids.add(event.pid)
                self.store.set_allocation_gpus(event.job_id, event.node_id, event.gpu_uuids, event.sandbox)
            elif isinstance(event, Exited):
                tracking = state.tracking(event.job_id)
                tracking.exits[event.rank] = event
                if event.end_reason == END_WATCHDOG_FAILED:
                    self.stats.watchdog_failures += 1
                    logger.error(
                        "job %s rank %d: its runner's watchdog failed; the rank was stopped", event.job_id, event.rank
                    )
                if len(tracking.exits) >= tracking.ranks:
                    self._ended(event.job_id, tracking)
            elif isinstance(event, JobLost):
                state.tracking(event.job_id).lost_at = event.at
                logger.warning("job %s lost a rank: %s", event.job_id, event.reason)
            elif isinstance(event, NodeLost):
                state.dead_nodes[event.node_id] = min(event.at, state.dead_nodes.get(event.node_id, event.at))
                logger.error("Ray node %s died at %s", event.node_id, event.at)
            elif isinstance(event, Checkpoint):
                self.store.record_checkpoint(event.job_id, event.at)
            elif isinstance(event, Released):
                self._released(event)
        except NeocloudError as e:
            logger.error("could not apply %s: %s", event, e)

    def _ended(self, job_id: str, tracking: Tracking) -> None:
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
        cleanup = Cleanup(uuids, frozenset(tracking.pids), None, holder)
        # A rank on a node that died was lost, whatever stopped the others (the
        # policy may have preempted the job for its vanished GPUs first).
        dead_nodes = self.state.dead_nodes
        died = [dead_nodes[a.node_id] for a in open_allocations if a.node_id in dead_nodes]
        if died and tracking.lost_at is None:
            tracking.lost_at = min(died)
        exits = sorted(tracking.exits.values(), key=lambda e: e.rank)
        at = min((e.at for e in exits if e.at is not None), default=now)
        if job.state in ACTIVE_STATES:
            # Intent first: a crash from here on is finished by repair.py with this outcome and end time.
            intent = ending(job, exits, tracking.lost_at, at)
            self.state.begin_stop(intent, cleanup)
            fault_point("stop.intent")
            settle(self.store, intent)
            fault_point("stop.store")
        else:
            self.state.put_cleanup(job_id, cleanup)
        self.executor.release(job_id)
        fault_point("stop.release")

    def _released(self, event: Released) -> None:
        tracking = self.state.jobs.pop(event.job_id, None)
        pids = set(event.pids) | (tracking.pids if tracking else set())
        pending = self.state.cleanups.get(event.job_id)
        holder = None
        if pending is None:  # released without our asking (e.g. reattached after a restart)
            allocations = self.store.allocations(event.job_id)
            last_start = max((a.start for a in allocations), default=0.0)
            uuids = tuple(u for a in allocations if a.start == last_start for u in a.gpu_uuids)
        else:
            uuids, holder = pending.gpu_uuids, pending.holder
        self.state.released(
            event.job_id,
            Cleanup(uuids, frozenset(pids), round(self.clock() * 1e6), holder, frozenset(event.pid_namespaces)),
        )
        if not event.verified:
            logger.warning("job %s released without every runner checking its processes; NVML decides", event.job_id)
