"""Rooms: the nodes a preemption frees, held for the job it was for.

A preemption plan (preempt.py) frees nodes for one queued job, but the GPUs
are free only once the executor releases them, passes later. Until then the
job's room is handed back to every pass (Decision.rooms -> PolicyInput.rooms)
and claimed before anything is placed: no other job places, holds or plans
there, and the job itself is placed there and nowhere else once the room has
space for it, so every preemption is spent on the job it was for (issue 12: a
1-GPU job preempted a 4-GPU spot job and then started on another node). A
room is dropped when it can no longer serve the job (a node gone, cordoned,
too unhealthy for a slice or, for tenant work, no longer able to sandbox it,
or nothing left leaving it that would make space);
the job then goes through the pass like any other.
"""

from __future__ import annotations

import logging

from neocloud.scheduler.policy.fleet import FleetState, iso_key, may_run_on
from neocloud.scheduler.policy.placement import Placer
from neocloud.scheduler.policy.types import JobRequest, PolicyInput

logger = logging.getLogger(__name__)

Entries = tuple[tuple[str, tuple[str, ...]], ...]


class Rooms:
    """The rooms of one pass: claimed at its start, spent or handed on at its end."""

    def __init__(self, inp: PolicyInput, fleet: FleetState, placer: Placer, gone: set[str]) -> None:
        self.fleet = fleet
        self.placer = placer
        self.gone = gone  # preempted in this pass (counts as leaving)
        self.iso = inp.config.one_tenant_per_node
        self.of: dict[str, list[int]] = {}  # job id -> node indices of its room
        self.out: dict[str, tuple[str, ...]] = {}  # rooms still awaited after this pass (Decision.rooms)
        if not inp.rooms:
            return
        queued = {j.job_id for j in inp.queue}
        index = {n.node_id: i for i, n in enumerate(inp.nodes)}  # (only when some job has a room)
        for job_id, names in inp.rooms.items():
            ixs = [index.get(nid) for nid in names]
            if job_id not in queued or not ixs or None in ixs:
                continue  # started, cancelled, or a node left the fleet: the job goes the usual way
            room = [i for i in ixs if i is not None]
            for i in room:
                placer.claim(i)
            self.of[job_id] = room
            self.out[job_id] = tuple(names)

    def keep(self, job_id: str, nodes: list[int]) -> None:
        """A plan of this pass preempted work on `nodes` for the job."""
        self.out[job_id] = tuple(self.fleet.nodes[i].node_id for i in nodes)

    def place(self, job: JobRequest, key: str) -> Entries | int | None:
        """The job's placement in its room; or, if the room is not free yet, the GPUs still
        leaving it (the job waits); None if it has no room (any longer)."""
        room = self.of.pop(job.job_id, None)
        if room is None:
            return None
        g = job.gpus_per_node
        n = job.gpus // g
        nodes = self.fleet.nodes
        if len(room) < n or any(
            nodes[i].cordoned or len(nodes[i].placeable) < g or not may_run_on(nodes[i].sandboxed, key) for i in room
        ):
            del self.out[job.job_id]
            return None
        ready = [i for i in room if self._ready(i, g, key)][:n]
        if len(ready) == n:
            del self.out[job.job_id]
            return self._give(ready, g, key)
        leaving = sum(self._leaving(i) for i in room)
        if leaving == 0:  # nothing left to wait for: the room will not fit the job
            del self.out[job.job_id]
            return None
        return leaving

    def _ready(self, i: int, g: int, key: str) -> bool:
        if self.placer.free[i] < g:
            return False
        # Under isolation, work of another owner (leaving or not) must be gone first.
        return not self.iso or all(iso_key(j.tenant, j.job_class) == key for j in self.fleet.jobs_on(i))

    def _leaving(self, i: int) -> int:
        """GPUs on node i held by work under notice (or preempted in this pass)."""
        nid = self.fleet.nodes[i].node_id
        return sum(
            len(gs)
            for j in self.fleet.jobs_on(i)
            if j.preemption_notice_at is not None or j.job_id in self.gone
            for node, gs in j.placement
            if node == nid
        )

    def _give(self, ready: list[int], g: int, key: str) -> Entries:
        """g free GPUs on each node of `ready` (claimed, so out of every pool) to owner `key`."""
        placer = self.placer
        entries = []
        for i in ready:
            ids = placer.free_ids(i)
            entries.append((self.fleet.nodes[i].node_id, tuple(ids[:g])))
            del ids[:g]
            placer.free[i] -= g
            if self.iso:
                placer.owner[i] = key
            placer.fresh[i] = key
        return tuple(entries)
