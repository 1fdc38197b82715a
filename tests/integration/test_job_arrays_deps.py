"""Job names, CPU and memory requests, dependencies and arrays over real gRPC on loopback, with the
real controller, store and policy on the in-memory executor (test_scheduler_on_ray.py runs Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from neocloud.scheduler.store.records import JobState
from neocloud.v1 import jobs_pb2 as pb
from tests.api_server import ApiServer
from tests.integration.test_job_api import rpc_error
from tests.unit.control.test_controller import Rig


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[ApiServer, Rig]]:
    api = ApiServer(tmp_path / "s.db")
    rig = Rig(tmp_path, tenants=())
    yield api, rig
    api.stop()


def submit(api: ApiServer, who: str = "acme", **fields: Any) -> pb.Job:
    values: dict[str, Any] = {"job_class": pb.JOB_CLASS_SPOT, "gpus": 1, "command": ["true"]}
    values.update(fields)
    return api.jobs.Submit(pb.SubmitJobRequest(spec=pb.JobSpec(**values)), metadata=api.auth(who), timeout=10)


def get(api: ApiServer, job_id: str) -> pb.Job:
    return api.jobs.Get(pb.GetJobRequest(job_id=job_id), metadata=api.auth("acme"), timeout=10)


def step_until(api: ApiServer, rig: Rig, job_id: str, state: int, steps: int = 6) -> None:
    """Controller steps until the job is in `state` (a released job's GPUs wait a step for NVML)."""
    for _ in range(steps):
        rig.step()
        if get(api, job_id).state == state:
            return
    raise AssertionError(f"job {job_id} is {pb.JobState.Name(get(api, job_id).state)} after {steps} steps")


def test_an_array_runs_each_task_with_its_index_and_is_cancelled_together(site: tuple[ApiServer, Rig]) -> None:
    api, rig = site
    first = submit(api, array="0-6:2", name="sweep", cpus=4, memory_bytes=16 * 2**30)
    assert (first.array_job_id, first.array_task_id) == (first.job_id, 0)
    listed = api.jobs.List(pb.ListJobsRequest(array_job_id=first.job_id), metadata=api.auth("acme"), timeout=10)
    tasks = {t.array_task_id: t for t in listed.jobs}
    assert sorted(tasks) == [0, 2, 4, 6]
    by_name = api.jobs.List(pb.ListJobsRequest(name="sweep"), metadata=api.auth("acme"), timeout=10)
    assert {j.job_id for j in by_name.jobs} == {t.job_id for t in tasks.values()}
    rig.step()
    for index, task in tasks.items():
        ran = rig.executor.jobs[task.job_id].job
        assert ran.env["NEOCLOUD_ARRAY_JOB_ID"] == first.job_id
        assert ran.env["NEOCLOUD_ARRAY_TASK_ID"] == str(index)
        assert (ran.cpus, ran.memory_bytes) == (4, 16 * 2**30)
        assert get(api, task.job_id).state == pb.JOB_STATE_RUNNING
    shown = get(api, tasks[4].job_id)
    assert (shown.spec.name, shown.spec.cpus, shown.spec.memory_bytes, shown.spec.array) == (
        "sweep", 4, 16 * 2**30, "0-6:2"
    )  # fmt: skip
    # Another tenant can neither see nor cancel it.
    e = rpc_error(
        lambda: api.jobs.Cancel(pb.CancelJobRequest(job_id=first.job_id, array=True), metadata=api.auth("globex"))
    )
    assert e.code() == grpc.StatusCode.NOT_FOUND
    api.jobs.Cancel(pb.CancelJobRequest(job_id=tasks[2].job_id, array=True), metadata=api.auth("acme"), timeout=10)
    for task in tasks.values():
        step_until(api, rig, task.job_id, pb.JOB_STATE_CANCELLED)


def test_a_chain_that_succeeds_runs_in_order(site: tuple[ApiServer, Rig]) -> None:
    api, rig = site
    a = submit(api, gpus=16)  # the whole fleet: nothing else could run beside it anyway
    b = submit(api, after_ok=[a.job_id])
    c = submit(api, after_ok=[a.job_id, b.job_id])
    assert b.message == f"waiting for {a.job_id} to succeed (after-ok)"
    rig.step()
    assert [get(api, j.job_id).state for j in (a, b, c)] == [pb.JOB_STATE_RUNNING] + [pb.JOB_STATE_QUEUED] * 2
    assert get(api, b.job_id).message == f"waiting for {a.job_id} to succeed (after-ok)"  # not the policy's words
    rig.executor.exit(a.job_id, 0)
    step_until(api, rig, b.job_id, pb.JOB_STATE_RUNNING)
    assert get(api, a.job_id).state == pb.JOB_STATE_SUCCEEDED
    assert get(api, c.job_id).state == pb.JOB_STATE_QUEUED
    assert get(api, c.job_id).message == f"waiting for {b.job_id} to succeed (after-ok)"
    rig.executor.exit(b.job_id, 0)
    step_until(api, rig, c.job_id, pb.JOB_STATE_RUNNING)


def test_a_failed_parent_cancels_its_dependents_with_a_reason(site: tuple[ApiServer, Rig]) -> None:
    api, rig = site
    a = submit(api)
    b = submit(api, after_ok=[a.job_id])
    c = submit(api, after_ok=[b.job_id], array="0-2")
    rig.step()
    rig.executor.exit(a.job_id, 3)
    step_until(api, rig, a.job_id, pb.JOB_STATE_FAILED)
    assert get(api, a.job_id).state == pb.JOB_STATE_FAILED
    got = get(api, b.job_id)
    assert got.state == pb.JOB_STATE_CANCELLED and got.message == f"dependency {a.job_id} failed (after-ok)"
    events = list(api.jobs.Watch(pb.WatchJobRequest(job_id=b.job_id), metadata=api.auth("acme"), timeout=10))
    assert [e.kind for e in events] == ["submitted", "cancelled"]
    listed = api.jobs.List(pb.ListJobsRequest(array_job_id=c.job_id), metadata=api.auth("acme"), timeout=10)
    assert {t.state for t in listed.jobs} == {pb.JOB_STATE_CANCELLED} and len(listed.jobs) == 3
    assert set(rig.executor.jobs) == {a.job_id}  # nothing after it ever started


def test_bad_requests_get_a_status_naming_the_field(site: tuple[ApiServer, Rig]) -> None:
    api, _ = site
    theirs = submit(api, who="globex")
    cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
        ({"after_ok": [theirs.job_id]}, grpc.StatusCode.NOT_FOUND, "no job"),
        ({"after_ok": ["j-doesnotexist"]}, grpc.StatusCode.NOT_FOUND, "no job"),
        ({"array": "0-10000"}, grpc.StatusCode.INVALID_ARGUMENT, "at most 10000"),
        ({"array": "1-x"}, grpc.StatusCode.INVALID_ARGUMENT, "array"),
        ({"cpus": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "cpus"),
        ({"memory_bytes": 2**63 - 1}, grpc.StatusCode.INVALID_ARGUMENT, "memory_bytes"),
        ({"memory_bytes": 2**64 - 1}, grpc.StatusCode.INVALID_ARGUMENT, "memory_bytes"),
        ({"name": "no spaces"}, grpc.StatusCode.INVALID_ARGUMENT, "name"),
        ({"after_ok": [""]}, grpc.StatusCode.INVALID_ARGUMENT, "after_ok"),
    ]
    for fields, code, words in cases:
        e = rpc_error(lambda fields=fields: submit(api, **fields))  # type: ignore[misc]
        assert (e.code(), words in e.details()) == (code, True), (fields, e.details())
    e = rpc_error(lambda: api.jobs.List(pb.ListJobsRequest(name="a b"), metadata=api.auth("acme"), timeout=10))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [j.job_id for j in api.jobs.List(pb.ListJobsRequest(), metadata=api.auth("acme"), timeout=10).jobs] == []
    failed = submit(api)
    api.store.finish(failed.job_id, JobState.FAILED, 1)
    e = rpc_error(lambda: submit(api, after_ok=[failed.job_id]))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "could never start" in e.details()
