"""An in-memory Executor: jobs "run" until a test ends them, so the controller's
logic can be tested without Ray (the real one is tested on a Ray cluster).

It keeps what a Ray cluster keeps apart from what one executor knows: placement
groups and runners (`pgs`, `runners`) outlive a scheduler crash; the events not
yet polled and the jobs it tracks (`attached`) do not (`restart()`). Its step
boundaries carry the same fault points as RayExecutor's."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from neocloud.domain.errors import AlreadyExistsError, NotFoundError
from neocloud.domain.faults import fault_point
from neocloud.scheduler.executor.types import (
    END_CANCELLED,
    END_EXITED,
    END_LOST,
    END_PREEMPTED,
    ExecJob,
    ExecutorEvent,
    Exited,
    JobLost,
    RayNodeInfo,
    Released,
    Started,
)


@dataclass
class FakeJob:
    job: ExecJob
    placement: list[tuple[str, list[str]]]
    pids: list[int]
    signals: list[str] = field(default_factory=list)


class FakeExecutor:
    def __init__(self, nodes: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.alive = {n: True for n in nodes}
        self.jobs: dict[str, FakeJob] = {}  # every job ever started (its last run)
        self.released: list[str] = []
        self.pgs: set[str] = set()  # on the "cluster": placement groups ...
        self.runners: set[str] = set()  # ... and runners, by job id
        self.attached: set[str] = set()  # what this executor tracks (lost in a restart)
        self._events: list[ExecutorEvent] = []
        self._next_pid = 40_000

    def restart(self) -> None:
        """The scheduler process died: the cluster keeps its groups and runners, the executor forgets."""
        self._events.clear()
        self.attached.clear()

    def vanish(self, job_id: str) -> None:
        """The job's runners and placement group died with the cluster (no event: nobody watched)."""
        self.runners.discard(job_id)
        self.pgs.discard(job_id)

    def nodes(self) -> dict[str, RayNodeInfo]:
        return {n: RayNodeInfo(alive, 8, f"ray-{n}") for n, alive in self.alive.items()}

    def start(
        self,
        job: ExecJob,
        placement: Sequence[tuple[str, Sequence[str]]],
        inventory: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if job.job_id in self.pgs or job.job_id in self.runners:
            raise AlreadyExistsError(f"job {job.job_id} already has a placement group on the cluster")
        self.pgs.add(job.job_id)
        self.attached.add(job.job_id)
        fault_point("start.pg")
        pids = []
        for rank, (node, uuids) in enumerate(placement):
            self._next_pid += 1
            pids.append(self._next_pid)
            self._events.append(Started(job.job_id, rank, node, tuple(range(len(uuids))), tuple(uuids), self._next_pid))
        self.jobs[job.job_id] = FakeJob(job, [(n, list(u)) for n, u in placement], pids)
        self.runners.add(job.job_id)

    def exit(self, job_id: str, code: int = 0, reason: str = END_EXITED) -> None:
        """The test's stand-in for the job's processes ending."""
        for rank in range(len(self.jobs[job_id].placement)):
            self._events.append(Exited(job_id, rank, code, reason))

    def preempt(self, job_id: str, grace_s: float) -> None:
        self._get(job_id).signals.append(f"preempt grace={grace_s}")
        self.exit(job_id, -15, END_PREEMPTED)

    def warn(self, job_id: str, reason: str) -> None:
        self._get(job_id).signals.append(f"warn {reason}")

    def cancel(self, job_id: str, grace_s: float | None = None) -> None:
        self._get(job_id).signals.append("cancel")
        self.exit(job_id, -15, END_CANCELLED)

    def release(self, job_id: str) -> None:
        if job_id not in self.attached:
            raise NotFoundError(f"job {job_id} is not running on this executor")
        self.runners.discard(job_id)
        fault_point("stop.pg")
        self.pgs.discard(job_id)
        self.attached.discard(job_id)
        self.released.append(job_id)
        self._events.append(Released(job_id, tuple(self.jobs[job_id].pids) if job_id in self.jobs else ()))

    def poll(self) -> list[ExecutorEvent]:
        events, self._events = self._events, []
        return events

    def read_log(self, job_id: str, rank: int, offset: int = 0, max_bytes: int = 65536) -> tuple[bytes, bool]:
        if job_id not in self.jobs:
            raise NotFoundError(job_id)
        return b"", False

    def reattach(self, job_ids: Sequence[str] | set[str]) -> set[str]:
        found = {j for j in job_ids if j in self.runners or j in self.pgs}
        for job_id in found - self.attached:
            self.attached.add(job_id)
            if job_id not in self.runners:  # a group without runners: its ranks are lost, as on Ray
                now = self.clock()
                self._events.append(JobLost(job_id, now, "runner gone while the scheduler was away"))
                ranks = len(self.jobs[job_id].placement) if job_id in self.jobs else 1
                self._events += [Exited(job_id, rank, None, END_LOST, at=now) for rank in range(ranks)]
        return found

    def detached_jobs(self) -> set[str]:
        return self.pgs | self.runners

    def remove(self, job_id: str) -> bool:
        if job_id not in self.attached and not self.reattach([job_id]):
            return False
        self.release(job_id)
        return True

    def shutdown(self) -> None:
        self.jobs.clear()

    def _get(self, job_id: str) -> FakeJob:
        if job_id not in self.attached or job_id not in self.jobs:
            raise NotFoundError(f"job {job_id} is not running on this executor")
        return self.jobs[job_id]
