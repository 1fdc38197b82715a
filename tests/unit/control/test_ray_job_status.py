"""A `--ray` job ends with its driver's status (settle.ending): the executor stops its Ray's other ranks
once the driver is done, and however they end, rank 0's code decides."""

from __future__ import annotations

from neocloud.scheduler.control.settle import ending
from neocloud.scheduler.executor.types import END_EXITED, Exited
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.records import Job, JobSpec, JobState


def test_a_ray_jobs_status_is_its_drivers() -> None:
    spec = JobSpec("acme", "r", JobClass.SPOT, 2, 1, command=("x",), ray=True)
    job = Job("j1", spec, JobState.RUNNING, 0.0, 0.0)
    exits = [Exited("j1", 0, 0, END_EXITED), Exited("j1", 1, -9, END_EXITED)]
    assert ending(job, exits, None, 1.0).outcome == JobState.SUCCEEDED.value
    failed = [Exited("j1", 0, 3, END_EXITED), Exited("j1", 1, 0, END_EXITED)]
    assert ending(job, failed, None, 1.0).exit_code == 3
    plain = Job("j1", JobSpec("acme", "r", JobClass.SPOT, 2, 1, command=("x",)), JobState.RUNNING, 0.0, 0.0)
    assert ending(plain, exits, None, 1.0).outcome == JobState.FAILED.value
