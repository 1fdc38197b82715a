"""An in-memory Executor: jobs "run" until a test ends them, so the controller's
logic can be tested without Ray (the real one is tested on a Ray cluster)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from neocloud.domain.errors import NotFoundError
from neocloud.scheduler.executor.types import (
    END_CANCELLED,
    END_EXITED,
    END_PREEMPTED,
    ExecJob,
    ExecutorEvent,
    Exited,
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
    def __init__(self, nodes: Sequence[str]) -> None:
        self.alive = {n: True for n in nodes}
        self.jobs: dict[str, FakeJob] = {}
        self.released: list[str] = []
        self._events: list[ExecutorEvent] = []
        self._next_pid = 40_000

    def nodes(self) -> dict[str, RayNodeInfo]:
        return {n: RayNodeInfo(alive, 8, f"ray-{n}") for n, alive in self.alive.items()}

    def start(
        self,
        job: ExecJob,
        placement: Sequence[tuple[str, Sequence[str]]],
        inventory: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        pids = []
        for rank, (node, uuids) in enumerate(placement):
            self._next_pid += 1
            pids.append(self._next_pid)
            self._events.append(Started(job.job_id, rank, node, tuple(range(len(uuids))), tuple(uuids), self._next_pid))
        self.jobs[job.job_id] = FakeJob(job, [(n, list(u)) for n, u in placement], pids)

    def exit(self, job_id: str, code: int = 0, reason: str = END_EXITED) -> None:
        """The test's stand-in for the job's processes ending."""
        for rank in range(len(self.jobs[job_id].placement)):
            self._events.append(Exited(job_id, rank, code, reason))

    def preempt(self, job_id: str, grace_s: float) -> None:
        self.jobs[job_id].signals.append(f"preempt grace={grace_s}")
        self.exit(job_id, -15, END_PREEMPTED)

    def warn(self, job_id: str, reason: str) -> None:
        self.jobs[job_id].signals.append(f"warn {reason}")

    def cancel(self, job_id: str, grace_s: float | None = None) -> None:
        self.jobs[job_id].signals.append("cancel")
        self.exit(job_id, -15, END_CANCELLED)

    def release(self, job_id: str) -> None:
        self.released.append(job_id)
        self._events.append(Released(job_id, tuple(self.jobs[job_id].pids)))

    def poll(self) -> list[ExecutorEvent]:
        events, self._events = self._events, []
        return events

    def read_log(self, job_id: str, rank: int, offset: int = 0, max_bytes: int = 65536) -> tuple[bytes, bool]:
        if job_id not in self.jobs:
            raise NotFoundError(job_id)
        return b"", False

    def reattach(self, job_ids: Sequence[str] | set[str]) -> set[str]:
        return {j for j in job_ids if j in self.jobs and j not in self.released}

    def shutdown(self) -> None:
        self.jobs.clear()
