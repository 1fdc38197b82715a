"""Job names, CPU and memory requests, dependencies (--after-ok) and arrays (--array) in the store."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.arrays import MAX_ARRAY_TASKS, indices
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobSpec, JobState


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    db = open_db(tmp_path / "scheduler.db")
    s = JobStore(db, clock=lambda: 1000.0)
    s.create_tenant("acme", now=1.0)
    s.create_tenant("globex", now=1.0)
    yield s
    db.close()


def spec(request_id: str, **overrides: object) -> JobSpec:
    fields: dict[str, object] = {
        "tenant": "acme",
        "client_request_id": request_id,
        "job_class": JobClass.SPOT,
        "gpus": 1,
        "gpus_per_node": 1,
        "command": ("true",),
    }
    fields.update(overrides)
    return JobSpec(**fields)  # type: ignore[arg-type]


def count(store: JobStore, table: str) -> int:
    return int(store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def queued_ids(store: JobStore) -> set[str]:
    return {j.job_id for j in store.queued()}


def test_array_expressions() -> None:
    assert indices("0-3") == [0, 1, 2, 3]
    assert indices("0-15:4") == [0, 4, 8, 12]
    assert indices("1,3,5") == [1, 3, 5]
    assert indices("7, 0-2") == [0, 1, 2, 7]
    assert len(indices(f"0-{MAX_ARRAY_TASKS - 1}")) == MAX_ARRAY_TASKS
    for bad, words in [
        ("", "is not an index"),
        ("3-1", "upwards"),
        ("0-4:0", "upwards"),
        ("a-b", "is not an index"),
        ("1,1", "named twice"),
        ("0-1000000", "past the largest"),
        (f"0-{MAX_ARRAY_TASKS}", "at most 10000"),
        ("0-999999", "at most 10000"),  # refused by counting, before a list of a million is built
    ]:
        with pytest.raises(InvalidArgumentError, match=words):
            indices(bad)


def test_name_cpus_and_memory_round_trip_and_are_bounded(store: JobStore) -> None:
    job = store.submit(spec("r1", name="train-7b.v2", cpus=16, memory_bytes=64 * 2**30))
    again = store.get(job.job_id)
    assert (again.spec.name, again.spec.cpus, again.spec.memory_bytes) == ("train-7b.v2", 16, 64 * 2**30)
    assert [j.job_id for j in store.list_jobs("acme", name="train-7b.v2")] == [job.job_id]
    assert store.list_jobs("acme", name="other") == []
    for bad, words in [
        ({"name": "-x"}, "not a job name"),
        ({"name": "a" * 64}, "not a job name"),
        ({"name": "a b"}, "not a job name"),
        ({"cpus": 1025}, "cpus must be between 0 and 1024"),
        ({"cpus": -1}, "cpus must be"),
        ({"memory_bytes": 16 * 2**40 + 1}, "memory_bytes must be between"),
        ({"after_ok": ("j-1", "j-1")}, "twice"),
        ({"after_ok": tuple(f"j-{i}" for i in range(65))}, "limit is 64"),
        ({"array": "0-10000"}, "at most 10000"),
    ]:
        with pytest.raises(InvalidArgumentError, match=words):
            store.submit(spec("bad", **bad))  # type: ignore[arg-type]
    assert count(store, "jobs") == 1


def test_array_is_submitted_whole_listed_in_order_and_idempotent(store: JobStore) -> None:
    first = store.submit(spec("arr", array="0-15:4", name="sweep"))
    assert (first.array_job_id, first.array_index) == (first.job_id, 0)
    tasks = store.list_jobs("acme", array_job_id=first.job_id)
    assert [t.array_index for t in tasks] == [0, 4, 8, 12]
    assert {t.array_job_id for t in tasks} == {first.job_id}
    assert {t.spec.name for t in tasks} == {"sweep"}
    assert store.submit(spec("arr", array="0-15:4", name="sweep")).job_id == first.job_id  # a retry
    assert count(store, "jobs") == 4
    assert count(store, "job_events") == 4


def test_an_array_is_all_or_nothing(store: JobStore) -> None:
    """A task refused by the database (here: a forced constraint failure on the third) rolls back
    every task of the array; the other submits of the group are kept."""
    store._db.execute(
        "CREATE TRIGGER refuse_third BEFORE INSERT ON jobs WHEN NEW.array_index = 2"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    outcomes = store.submit_many([(spec("arr", array="0-4"), None), (spec("plain"), None)])
    assert isinstance(outcomes[0], sqlite3.IntegrityError)
    assert not isinstance(outcomes[1], Exception)
    assert count(store, "jobs") == 1


def test_a_large_array_submits_in_bounded_time(store: JobStore) -> None:
    started = time.monotonic()
    first = store.submit(spec("big", array=f"0-{MAX_ARRAY_TASKS - 1}"))
    elapsed = time.monotonic() - started
    assert count(store, "jobs") == MAX_ARRAY_TASKS
    assert elapsed < 10, elapsed
    cancelled = store.request_cancel(first.job_id, whole_array=True)
    assert cancelled.state is JobState.CANCELLED
    assert store.queued() == []


def test_cancel_the_whole_array(store: JobStore) -> None:
    first = store.submit(spec("arr", array="0-2"))
    tasks = store.list_jobs("acme", array_job_id=first.job_id)
    store.start(tasks[1].job_id, [("n1", ["GPU-0"])])
    store.finish(tasks[2].job_id, JobState.CANCELLED)  # cancelled alone already
    store.request_cancel(tasks[1].job_id, whole_array=True)
    after = {t.array_index: t for t in store.list_jobs("acme", array_job_id=first.job_id)}
    assert after[0].state is JobState.CANCELLED
    assert after[1].state is JobState.RUNNING and after[1].cancel_requested  # the controller stops it
    assert after[2].state is JobState.CANCELLED
    lone = store.submit(spec("lone"))
    assert store.request_cancel(lone.job_id, whole_array=True).state is JobState.CANCELLED  # no array: itself


def test_a_dependent_waits_until_every_dependency_succeeded(store: JobStore) -> None:
    a = store.submit(spec("a"))
    b = store.submit(spec("b"))
    c = store.submit(spec("c", after_ok=(a.job_id, b.job_id)))
    assert c.message == f"waiting for {a.job_id}, {b.job_id} to succeed (after-ok)"
    assert queued_ids(store) == {a.job_id, b.job_id}  # the policy never sees c
    store.start(a.job_id, [("n1", ["GPU-0"])])
    store.finish(a.job_id, JobState.SUCCEEDED, 0)
    assert store.get(c.job_id).message == f"waiting for {b.job_id} to succeed (after-ok)"
    assert c.job_id not in queued_ids(store)
    store.start(b.job_id, [("n1", ["GPU-0"])])
    store.requeue(b.job_id, reason="preempted")  # a requeue is no outcome: still waiting
    assert c.job_id not in queued_ids(store)
    store.start(b.job_id, [("n1", ["GPU-0"])])
    store.finish(b.job_id, JobState.SUCCEEDED, 0)
    assert c.job_id in queued_ids(store)
    assert store.get(c.job_id).spec.after_ok == (a.job_id, b.job_id)
    # A dependency that succeeded already is met at submit.
    d = store.submit(spec("d", after_ok=(a.job_id,)))
    assert d.job_id in queued_ids(store) and d.message == ""


@pytest.mark.parametrize("outcome", [JobState.FAILED, JobState.CANCELLED])
def test_a_failed_or_cancelled_dependency_cancels_the_chain(store: JobStore, outcome: JobState) -> None:
    a = store.submit(spec("a"))
    b = store.submit(spec("b", after_ok=(a.job_id,)))
    c = store.submit(spec("c", after_ok=(b.job_id,), array="0-2"))
    other = store.submit(spec("other"))
    store.start(a.job_id, [("n1", ["GPU-0"])])
    store.finish(a.job_id, outcome, 1 if outcome is JobState.FAILED else None)
    verb = "failed" if outcome is JobState.FAILED else "was cancelled"
    b_after = store.get(b.job_id)
    assert b_after.state is JobState.CANCELLED
    assert b_after.message == f"dependency {a.job_id} {verb} (after-ok)"
    for task in store.list_jobs("acme", array_job_id=c.job_id):
        assert task.state is JobState.CANCELLED
        assert task.message == f"dependency {b.job_id} was cancelled (after-ok)"
    assert store.get(other.job_id).state is JobState.QUEUED
    assert count(store, "job_waits") == 0
    # After the fact, a dependency that can never succeed is refused at the door.
    with pytest.raises(FailedPreconditionError, match=f"job {a.job_id} has {outcome.value}"):
        store.submit(spec("late", after_ok=(a.job_id,)))


def test_dependencies_are_the_tenants_own_and_must_exist(store: JobStore) -> None:
    theirs = store.submit(spec("x", tenant="globex"))
    with pytest.raises(NotFoundError, match="no job") as caught:
        store.submit(spec("a", after_ok=(theirs.job_id,)))
    with pytest.raises(NotFoundError) as unknown:
        store.submit(spec("b", after_ok=("j-000000000000",)))
    # Another tenant's job reads exactly as a job that does not exist (no leak).
    assert str(caught.value).replace(theirs.job_id, "ID") == str(unknown.value).replace("j-000000000000", "ID")
    assert count(store, "jobs") == 1


def test_cycles_cannot_be_formed(store: JobStore) -> None:
    """A dependency must exist at submit, so a job can only follow older jobs: no job can name
    itself or a job submitted after it, and so the graph has no cycle."""
    a = store.submit(spec("a"))
    b = store.submit(spec("b", after_ok=(a.job_id,)))
    # The only way to close a -> b -> a would be naming b in a, which was submitted before b existed;
    # a resubmission of a with b as dependency is a new spec under a used id (refused), or a new job.
    c = store.submit(spec("c", after_ok=(b.job_id,)))
    edges = store._db.execute("SELECT job_id, after_job_id FROM job_waits").fetchall()
    order = {j.job_id: j.submitted_at for j in store.list_jobs("acme")}
    rowids = {r[0]: r[1] for r in store._db.execute("SELECT job_id, rowid FROM jobs")}
    assert all(rowids[after] < rowids[job] for job, after in edges), (edges, order)
    assert set(edges) == {(b.job_id, a.job_id), (c.job_id, b.job_id)}
    with pytest.raises(NotFoundError):  # naming a job id before it exists
        store.submit(spec("self", after_ok=("j-" + "0" * 12,)))


def test_naming_an_array_waits_for_every_task(store: JobStore) -> None:
    first = store.submit(spec("arr", array="0-2"))
    tasks = store.list_jobs("acme", array_job_id=first.job_id)
    after_all = store.submit(spec("all", after_ok=(first.job_id,)))
    after_one = store.submit(spec("one", after_ok=(tasks[2].job_id,)))  # a task other than the first, alone
    assert count(store, "job_waits") == 2
    for task in tasks[::-1]:
        assert after_all.job_id not in queued_ids(store)
        store.start(task.job_id, [("n1", ["GPU-0"])])
        store.finish(task.job_id, JobState.SUCCEEDED, 0)
        assert after_one.job_id in queued_ids(store)  # task 2 was the first to succeed
    assert after_all.job_id in queued_ids(store)
    assert store.get(after_all.job_id).message == "dependencies met (after-ok)"


def test_a_failed_task_cancels_what_waits_for_its_array(store: JobStore) -> None:
    first = store.submit(spec("arr", array="0-2"))
    waiting_array = store.submit(spec("next", array="0-1", after_ok=(first.job_id,)))
    assert count(store, "job_waits") == 1  # an array waits whole, under its id
    tasks = store.list_jobs("acme", array_job_id=first.job_id)
    store.start(tasks[1].job_id, [("n1", ["GPU-0"])])
    store.finish(tasks[1].job_id, JobState.FAILED, 2)
    for task in store.list_jobs("acme", array_job_id=waiting_array.job_id):
        assert task.state is JobState.CANCELLED
        assert task.message == f"dependency {first.job_id}: its task 1 failed (after-ok)"
    assert {t.state for t in store.list_jobs("acme", array_job_id=first.job_id)} == {JobState.QUEUED, JobState.FAILED}
    with pytest.raises(FailedPreconditionError, match=f"a task of array {first.job_id} has failed"):
        store.submit(spec("late", after_ok=(first.job_id,)))
