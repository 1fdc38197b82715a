"""Setting right what a controller crash left half done, from the intents in the
store and what Ray holds (its placement groups and runners, by job id):

- a start cut short (its intent still there) is rolled back: the job goes back to the
  queue, its allocations closed at the time they opened (the tenant pays nothing), and
  whatever reached Ray is removed;
- a stop cut short is finished with the outcome and end time decided before the crash,
  and its placement group and runners are removed;
- GPUs awaiting release or NVML's proof stay held (the cleanups survive in the store);
- an orphan (a group or runner whose job is not running in the store) is removed.

All of it at start, before re-attaching; orphans again every `every_s` seconds (a
listing of the cluster's groups and actors: too costly for every step)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from neocloud.domain.errors import NeocloudError, NotFoundError
from neocloud.scheduler.control.settle import settle
from neocloud.scheduler.control.state import Cleanup, ControllerStats, ControlState
from neocloud.scheduler.executor.types import Executor
from neocloud.scheduler.store.intents import StartIntent, StopIntent
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import ACTIVE_STATES

logger = logging.getLogger(__name__)

REPAIR_EVERY_S = 30.0


class Repairer:
    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        state: ControlState,
        stats: ControllerStats,
        clock: Callable[[], float],
        every_s: float = REPAIR_EVERY_S,
    ) -> None:
        self.store = store
        self.executor = executor
        self.state = state
        self.stats = stats
        self.clock = clock
        self.every_s = every_s
        self._next = 0.0  # monotonic

    def at_start(self) -> None:
        """Before re-attaching to the running jobs: finish or roll back what the last run left."""
        self.state.load_cleanups()
        on_ray = self.executor.detached_jobs()
        for intent in self.state.intents.intents():
            if isinstance(intent, StartIntent):
                self._roll_back(intent, on_ray)
            else:
                self._finish_stop(intent)
        now_us = round(self.clock() * 1e6)
        for job_id, c in list(self.state.cleanups.items()):
            if c.released_us is not None:
                continue
            if job_id in on_ray:
                self._remove(job_id, "its release was cut short")
            else:  # Ray had freed it all before the crash: NVML decides from now
                self.state.released(job_id, replace(c, released_us=now_us))
                self._repaired(f"job {job_id}: its release had finished on Ray; its GPUs now wait for NVML")
        self._remove_orphans(on_ray)
        self._next = time.monotonic() + self.every_s

    def periodic(self) -> None:
        """Every `every_s`: remove orphans (a crash's, or an operator's leftovers)."""
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every_s
        self._remove_orphans(self.executor.detached_jobs())

    def _roll_back(self, intent: StartIntent, on_ray: set[str]) -> None:
        job_id = intent.job_id
        try:
            job = self.store.get(job_id)
        except NotFoundError:
            job = None
        running = job is not None and job.state in ACTIVE_STATES
        if running and job is not None and job.started_at == intent.at:
            # Closed where they opened: no GPU-second of a start that never finished is billed.
            self.store.close_allocations(job_id, intent.at, "start_interrupted")
            self.store.requeue(
                job_id, now=intent.at, reason="its start was cut short by a scheduler crash", counted=False
            )
            running = False
        if job_id in on_ray and not running and job_id not in self.state.cleanups:
            uuids = tuple(u for _, node_uuids in intent.placement for u in node_uuids)
            self.state.put_cleanup(job_id, Cleanup(uuids, frozenset(), None))
        self.state.intents.clear(job_id, "start")
        self._repaired(f"job {job_id}: its start was cut short by a crash; rolled back, unbilled")

    def _finish_stop(self, intent: StopIntent) -> None:
        settle(self.store, intent)
        self._repaired(f"job {intent.job_id}: its stop was cut short by a crash; settled as {intent.outcome}")

    def _remove_orphans(self, on_ray: set[str]) -> None:
        active = {job.job_id for job, _ in self.store.running()}
        releasing = {j for j, c in list(self.state.cleanups.items()) if c.released_us is None}
        for job_id in sorted(on_ray - active - releasing - self.state.removing):
            if job_id not in self.state.cleanups:  # its GPUs (none for a job this store never had)
                allocations = self.store.allocations(job_id)
                last = max((a.start for a in allocations), default=None)
                uuids = tuple(u for a in allocations if a.start == last for u in a.gpu_uuids)
                self.state.put_cleanup(job_id, Cleanup(uuids, frozenset(), None))
            self._remove(job_id, "no running job in the store owns it")

    def _remove(self, job_id: str, why: str) -> None:
        """Release what Ray holds for the job; Released comes through the reconciler."""
        self.state.removing.add(job_id)
        try:
            found = self.executor.remove(job_id)
        except NeocloudError as e:  # the next pass tries again
            self.state.removing.discard(job_id)
            logger.error("job %s: could not remove its placement group and runners: %s", job_id, e)
            return
        if found:
            self._repaired(f"job {job_id}: removing its placement group and runners from Ray ({why})")
            return
        self.state.removing.discard(job_id)  # gone meanwhile: nothing to wait for but NVML
        c = self.state.cleanups[job_id]
        if c.released_us is None:
            self.state.released(job_id, replace(c, released_us=round(self.clock() * 1e6)))

    def _repaired(self, what: str) -> None:
        self.stats.repairs += 1
        logger.warning("repair: %s", what)
