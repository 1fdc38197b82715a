"""What the controller knows between steps that the store does not hold: what the
executor has reported about each running job, GPUs of released jobs still
awaiting NVML's word that they are free, and the Ray nodes and cordons seen
at the last step."""

from __future__ import annotations

from dataclasses import dataclass, field

from neocloud.domain.durations import Durations
from neocloud.scheduler.executor.types import Exited
from neocloud.scheduler.policy.types import RunningJob
from neocloud.scheduler.store.intents import CleanupRow, IntentStore, StopIntent
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Allocation, Job

Running = list[tuple[Job, list[Allocation]]]  # what JobStore.running() returns


@dataclass(slots=True)
class Cleanup:
    """GPUs a released job held, not placeable until NVML shows none of its pids."""

    gpu_uuids: tuple[str, ...]
    pids: frozenset[int]
    released_us: int | None  # None until the executor reports the release
    # The ended job as the policy sees it until its GPUs are confirmed free: under notice, so
    # they count as freeing soon, not as lost capacity to preempt more work for (or, for a
    # reserved job, as capacity its contract lacks).
    holder: RunningJob | None = None
    # The PID namespaces `pids` were seen in (Released.pid_namespaces); empty: match them in every one.
    pid_namespaces: frozenset[int] = frozenset()


@dataclass(slots=True)
class Tracking:
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
    repairs: int = 0  # crash leftovers set right (repair.py)
    watchdog_failures: int = 0  # ranks a runner stopped because its watchdog failed (requeued)
    step_seconds: Durations = field(default_factory=Durations)


@dataclass(slots=True)
class ControlState:
    """The controller's memory across steps, shared by the parts of a step. Cleanups are
    written through to the store, so a restarted controller still waits for NVML."""

    store: JobStore
    intents: IntentStore
    jobs: dict[str, Tracking] = field(default_factory=dict)
    cleanups: dict[str, Cleanup] = field(default_factory=dict)
    removing: set[str] = field(default_factory=set)  # orphans whose release is under way
    ray_nodes: frozenset[str] | None = None  # alive at the last step; None before the first
    unsandboxed: frozenset[str] = frozenset()  # alive, but cannot sandbox tenant ranks: internal work only
    dead_nodes: dict[str, float] = field(default_factory=dict)  # node -> when its Ray node died
    cordoned: frozenset[str] = frozenset()

    def tracking(self, job_id: str) -> Tracking:
        """The job's tracking, started from its open allocations if nothing was seen of it yet."""
        tracking = self.jobs.get(job_id)
        if tracking is None:
            tracking = Tracking(ranks=max(1, len(self.store.allocations(job_id, open_only=True))))
            self.jobs[job_id] = tracking
        return tracking

    def load_cleanups(self) -> None:
        """After a restart: the GPUs the last run left awaiting NVML."""
        for row in self.intents.cleanups():
            self.cleanups[row.job_id] = Cleanup(
                row.gpu_uuids, row.pids, row.released_us, row.holder, row.pid_namespaces
            )

    def put_cleanup(self, job_id: str, cleanup: Cleanup) -> None:
        self.intents.put_cleanup(row_of(job_id, cleanup))
        self.cleanups[job_id] = cleanup

    def begin_stop(self, intent: StopIntent, cleanup: Cleanup) -> None:
        """The stop's intent and the cleanup it leaves, durable together, before anything is stopped."""
        self.intents.begin_stop(intent, row_of(intent.job_id, cleanup))
        self.cleanups[intent.job_id] = cleanup

    def released(self, job_id: str, cleanup: Cleanup) -> None:
        """Ray reported the release: the stop is done, the GPUs wait for NVML."""
        self.intents.released(row_of(job_id, cleanup))
        self.cleanups[job_id] = cleanup
        self.removing.discard(job_id)

    def drop_cleanup(self, job_id: str) -> None:
        self.intents.drop_cleanup(job_id)
        del self.cleanups[job_id]


def row_of(job_id: str, c: Cleanup) -> CleanupRow:
    return CleanupRow(job_id, c.gpu_uuids, c.pids, c.released_us, c.holder, c.pid_namespaces)
