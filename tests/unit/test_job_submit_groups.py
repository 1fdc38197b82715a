"""Group commit of Submit (scheduler/api/jobs.py GroupSubmitter) over a real
SQLite store: who shares a group, what each caller gets back, and what a
failed group leaves behind."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from neocloud.domain.errors import AlreadyExistsError, InvalidArgumentError
from neocloud.scheduler.api.jobs import GroupSubmitter
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Job, JobSpec
from tests.unit.test_job_store import doom_commits
from tests.unit.test_job_store import spec as job_spec


class GatedStore(JobStore):
    """A real store that holds its first group until `gate` opens, and records every group."""

    def __init__(self, db: sqlite3.Connection) -> None:
        super().__init__(db)
        self.groups: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def submit_many(self, requests: Sequence[tuple[JobSpec, float | None]]) -> list[Job | Exception]:
        self.groups.append([s.client_request_id for s, _ in requests])
        self.entered.set()
        if not self.gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        return super().submit_many(requests)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GatedStore]:
    s = GatedStore(open_db(tmp_path / "scheduler.db"))
    s.create_tenant("acme")
    yield s
    s.close()


def spec(request_id: str, **overrides: object) -> JobSpec:
    return job_spec(client_request_id=request_id, **overrides)


async def while_a_group_commits(
    store: GatedStore, submitter: GroupSubmitter, specs: Sequence[JobSpec]
) -> list[Job | BaseException]:
    """Submit "first", and `specs` while its group is still committing; then let it finish."""
    first = asyncio.create_task(submitter.submit(spec("first"), 1.0))
    await asyncio.to_thread(store.entered.wait, 10)
    rest = [asyncio.create_task(submitter.submit(s, 2.0)) for s in specs]
    await asyncio.sleep(0)  # each of them queues behind the group in flight
    store.gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_calls_that_arrive_during_a_commit_share_the_next_one(store: GatedStore, tmp_path: Path) -> None:
    specs = [spec("a"), spec("b"), spec("b"), spec("bad", gpus=0), spec("b", gpus=16), spec("c")]
    results = asyncio.run(while_a_group_commits(store, GroupSubmitter(store), specs))
    assert store.groups == [["first"], ["a", "b", "b", "bad", "b", "c"]]
    first, a, b, b_again, bad, b_changed, c = results
    assert all(isinstance(j, Job) for j in (first, a, b, c))
    assert b_again == b  # one request id twice in a group: one job
    assert isinstance(bad, InvalidArgumentError) and isinstance(b_changed, AlreadyExistsError)
    assert {j.spec.client_request_id for j in store.list_jobs()} == {"first", "a", "b", "c"}
    reopened = JobStore(open_db(tmp_path / "scheduler.db"))  # committed: another connection sees them
    assert [reopened.get(j.job_id) for j in (first, a, b, c) if isinstance(j, Job)] == [first, a, b, c]
    reopened.close()


def test_a_failed_group_fails_every_caller_in_it_and_writes_nothing(store: GatedStore) -> None:
    doom_commits(store)
    specs = [spec("a"), spec("doomed"), spec("c")]
    results = asyncio.run(while_a_group_commits(store, GroupSubmitter(store), specs))
    assert store.groups == [["first"], ["a", "doomed", "c"]]
    first, *failed = results
    assert isinstance(first, Job)
    for error in failed:
        assert isinstance(error, RuntimeError) and "none of them was written" in str(error)
        assert isinstance(error.__cause__, sqlite3.IntegrityError)
    assert len({id(e) for e in failed}) == 3  # each caller its own error
    assert [j.spec.client_request_id for j in store.list_jobs()] == ["first"]
    assert len(store.events_since(first.job_id)) == 1 and not store._db.in_transaction

    async def retry() -> Job:
        return await GroupSubmitter(store).submit(spec("a"), 3.0)

    assert asyncio.run(retry()).spec.client_request_id == "a"


def test_a_caller_that_goes_away_does_not_disturb_its_group(store: GatedStore) -> None:
    async def scenario() -> list[Job | BaseException]:
        submitter = GroupSubmitter(store)
        first = asyncio.create_task(submitter.submit(spec("first"), 1.0))
        await asyncio.to_thread(store.entered.wait, 10)
        leaving = asyncio.create_task(submitter.submit(spec("leaving"), 2.0))
        staying = asyncio.create_task(submitter.submit(spec("staying"), 2.0))
        await asyncio.sleep(0)
        leaving.cancel()
        store.gate.set()
        return await asyncio.gather(first, leaving, staying, return_exceptions=True)

    first, leaving, staying = asyncio.run(scenario())
    assert isinstance(first, Job) and isinstance(staying, Job)
    assert isinstance(leaving, asyncio.CancelledError)
    assert store.groups == [["first"], ["staying"]]  # gone before its group began: nothing written for it
    assert {j.spec.client_request_id for j in store.list_jobs()} == {"first", "staying"}


def test_groups_are_at_most_max_group(store: GatedStore) -> None:
    specs = [spec(f"r{i}") for i in range(5)]
    results = asyncio.run(while_a_group_commits(store, GroupSubmitter(store, max_group=2), specs))
    assert all(isinstance(r, Job) for r in results)
    assert store.groups == [["first"], ["r0", "r1"], ["r2", "r3"], ["r4"]]
