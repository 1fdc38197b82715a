"""Carrying out a Decision: preemptions are noted in the store, then signalled;
placements are recorded in the store, then started on the executor; reclaim
warnings are sent once per reason and counted once per episode (a job warned
pass after pass is one warning); pending reasons go where the owner reads them,
and a job that starts loses its pending reason; the rooms being freed for
queued jobs are kept for the next pass."""

from __future__ import annotations

import logging

from neocloud.domain.errors import NeocloudError, UnavailableError
from neocloud.domain.faults import fault_point
from neocloud.scheduler.control.state import ControllerStats, ControlState, Tracking
from neocloud.scheduler.executor.types import ExecJob, Executor
from neocloud.scheduler.policy.types import Decision, JobClass, NodeView
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobState

logger = logging.getLogger(__name__)


class Enactor:
    def __init__(self, store: JobStore, executor: Executor, state: ControlState, stats: ControllerStats) -> None:
        self.store = store
        self.executor = executor
        self.state = state
        self.stats = stats
        self.pending: dict[str, str] = {}  # job id -> why it waits (from the last pass)
        self.warned: dict[str, str] = {}  # job id -> reclaim warning
        self.rooms: dict[str, tuple[str, ...]] = {}  # job id -> nodes being freed for it (PolicyInput.rooms)

    def enact(self, decision: Decision, now: float, views: tuple[NodeView, ...]) -> None:
        self._preempt(decision, now)
        changed = {j: r for j, r in decision.pending.items() if self.pending.get(j) != r}
        # A job about to start says why it waited no more (set while it is still queued).
        changed.update({p.job_id: "" for p in decision.placements})
        if changed:  # `neocloud job ID` shows it as the job's message
            self.store.set_pending_reasons(changed)
        # What was written, before a start that fails could end the step: a job whose start failed
        # is pending again next pass, and its reason, differing from none, is written again.
        self.pending = dict(decision.pending)
        self.rooms = dict(decision.rooms)
        self._place(decision, now, views)
        self._warn(decision)

    def _preempt(self, decision: Decision, now: float) -> None:
        for preemption in decision.preemptions:
            tracking = self.state.tracking(preemption.job_id)
            if tracking.stopping:
                continue
            job = self.store.notify_preemption(preemption.job_id, now, preemption.reason)
            tracking.stopping = True
            self.executor.preempt(job.job_id, job.spec.grace_s)
            self.stats.preemptions += 1
            logger.info("preempting job %s: %s", job.job_id, preemption.reason)

    def _place(self, decision: Decision, now: float, views: tuple[NodeView, ...]) -> None:
        inventory = {v.node_id: list(v.gpus) for v in views}
        for placement in decision.placements:
            job = self.store.get(placement.job_id)
            spec = job.spec  # read before the store says running: the start follows at once
            exec_job = ExecJob(
                job_id=job.job_id,
                command=list(spec.command) if spec.command else None,
                entrypoint=spec.entrypoint,
                env={**spec.env, **job.array_env},
                grace_s=spec.grace_s,
                max_runtime_s=spec.max_runtime_s,
                cpus=spec.cpus,
                memory_bytes=spec.memory_bytes,
                workdir_digest=spec.workdir_digest,
                ray=spec.ray,
                uid_offset=self.store.uid_offset(job.tenant),
                # Every rank is sandboxed as its tenant where the node can; only the lab's own work
                # (class internal) is sent to nodes that cannot, and runs there unsandboxed.
                tenant=job.tenant,
                internal=job.job_class is JobClass.INTERNAL,
            )
            # Intent first: a crash before it is cleared is rolled back by repair.py, unbilled.
            self.state.intents.begin_start(job.job_id, placement.placement, now)
            fault_point("start.intent")
            try:
                allocations = self.store.start(job.job_id, placement.placement, now)
            except NeocloudError:
                self.state.intents.clear(job.job_id, "start")
                raise
            fault_point("start.store")
            self.state.jobs[job.job_id] = Tracking(ranks=len(allocations))
            try:
                self.executor.start(exec_job, [(n, list(u)) for n, u in placement.placement], inventory)
            except UnavailableError as e:  # a node went between the policy's pass and now: not the job's fault
                logger.warning("job %s could not start on Ray, back to the queue: %s", job.job_id, e)
                self.store.requeue(job.job_id, now=now, reason=f"could not start: {e}", counted=False)
                self.state.intents.clear(job.job_id, "start")
                continue
            except NeocloudError as e:
                logger.error("job %s could not start on Ray: %s", job.job_id, e)
                self.store.finish(job.job_id, JobState.FAILED, None, f"could not start: {e}", now=now)
                self.state.intents.clear(job.job_id, "start")
                continue
            fault_point("start.runners")
            self.state.intents.clear(job.job_id, "start")
            self.stats.placements += 1

    def _warn(self, decision: Decision) -> None:
        for warning in decision.warnings:
            if self.warned.get(warning.job_id) != warning.reason:
                logger.info("reclaim warning for job %s: %s", warning.job_id, warning.reason)
                if warning.job_id not in self.warned:  # a new episode, not a new wording of the same one
                    self.stats.warnings += 1
                try:
                    self.executor.warn(warning.job_id, warning.reason)
                except NeocloudError as e:  # gone meanwhile: the next pass knows
                    logger.warning("job %s: reclaim warning not delivered: %s", warning.job_id, e)
        self.warned = {w.job_id: w.reason for w in decision.warnings}
