"""The executor's book of jobs: what each rank's runner last reported, and the
events that follow from a new report. No Ray calls here (actor handles and
object refs are opaque `Any`), so the event logic reads on its own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from neocloud.scheduler.executor.rank import RankStatus
from neocloud.scheduler.executor.types import (
    END_EXITED,
    END_LOST,
    Checkpoint,
    ExecJob,
    ExecutorEvent,
    Exited,
    Started,
)


@dataclass
class RankRecord:
    rank: int
    node_id: str
    actor: Any
    launch_ref: Any = None  # pending launch(); no watch until it resolves
    watch_ref: Any = None  # pending long-poll watch()
    reap_ref: Any = None  # pending reap() during release
    status: RankStatus | None = None
    started: bool = False  # Started was reported
    exited: bool = False  # Exited was reported
    dead: bool = False  # the runner actor died (node lost, or killed)
    reaped: bool = False  # release: the group is proven gone (or the runner is dead)
    reaps: int = 0

    @property
    def version(self) -> int:
        return -1 if self.status is None else self.status.version

    @property
    def ray_node_id(self) -> str | None:
        return None if self.status is None else self.status.ray_node_id


@dataclass
class JobRecord:
    job: ExecJob
    pg: Any
    ranks: list[RankRecord]
    stop_reason: str | None = None
    lost: bool = False
    releasing: bool = False
    unverified: bool = False  # a runner died, so its node's processes could not be checked
    last_checkpoint: float | None = None
    pids: set[int] = field(default_factory=set)
    pid_namespaces: set[int] = field(default_factory=set)  # of the runners that saw `pids`
    master: Any = None  # ref to rank 0's (ip, port), the argument of every launch()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def ended(self) -> bool:
        return all(r.exited for r in self.ranks)


def apply_status(job: JobRecord, r: RankRecord, st: RankStatus) -> list[ExecutorEvent]:
    """Record a runner's report; returns the events it brings (each reported once)."""
    events: list[ExecutorEvent] = []
    if r.status is not None and st.version < r.status.version:
        return events  # an older report overtaken by a newer one
    r.status = st
    job.pids.update(st.pids)
    if st.pid_namespace:
        job.pid_namespaces.add(st.pid_namespace)
    if st.pid is not None and not r.started:
        r.started = True
        started = Started(job.job_id, r.rank, r.node_id, st.gpu_indices, st.gpu_uuids, st.pid, at=st.started_at)
        events.append(dataclasses.replace(started, sandbox=st.sandbox))
    if st.last_checkpoint_at is not None and (
        job.last_checkpoint is None or st.last_checkpoint_at > job.last_checkpoint
    ):
        job.last_checkpoint = st.last_checkpoint_at
        events.append(Checkpoint(job.job_id, st.last_checkpoint_at))
    if st.ended and not r.exited:
        r.exited = True
        events.append(Exited(job.job_id, r.rank, st.exit_code, st.end_reason or END_EXITED, at=st.ended_at))
    return events


def gang_failed(job: JobRecord, r: RankRecord) -> bool:
    """A rank of a multi-rank job exited non-zero by itself: the rest of the gang must stop."""
    st = r.status
    return (
        job.world_size > 1
        and job.stop_reason is None
        and st is not None
        and st.ended
        and st.end_reason == END_EXITED
        and st.exit_code != 0
    )


def driver_done(job: JobRecord, r: RankRecord) -> bool:
    """Rank 0 of a `--ray` job (its driver) ended by itself: its Ray's other ranks have nothing left to
    serve and must stop, whatever still answers on the head's port."""
    st = r.status
    return (
        job.job.ray
        and r.rank == 0
        and job.world_size > 1
        and job.stop_reason is None
        and st is not None
        and st.ended
        and st.end_reason == END_EXITED
    )


def lose_rank(job: JobRecord, r: RankRecord, at: float) -> list[ExecutorEvent]:
    """A rank's runner is gone: it ends as lost (its exit status is unknowable)."""
    r.dead = True
    r.watch_ref = r.launch_ref = None
    if r.exited:
        return []
    r.exited = True
    return [Exited(job.job_id, r.rank, None, END_LOST, at=at)]
