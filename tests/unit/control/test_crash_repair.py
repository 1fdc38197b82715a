"""A controller crash at every step boundary of a start and a stop, then a restart over
the same store and the same (in-memory) cluster: the invariants hold after the repair.
tests/integration/test_controller_crash.py does the same on a real Ray cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain import faults
from neocloud.domain.faults import POINTS, CrashInjected
from neocloud.scheduler.control import reconcile
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.metrics import SchedulerCollector
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.intents import IntentStore
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Allocation, JobState
from tests.unit.control.test_controller import Rig

ROOT = Path(__file__).resolve().parents[3]
DOWNTIME_S = 100.0


@pytest.fixture(autouse=True)
def _disarmed() -> Iterator[None]:
    yield
    faults.disarm()


def test_the_list_of_fault_points_is_the_list_of_calls_in_the_code() -> None:
    called: list[str] = []
    for path in [*(ROOT / "scheduler").rglob("*.py"), *(ROOT / "neocloud" / "domain").rglob("*.py")]:
        called += re.findall(r'fault_point\("([^"]+)"\)', path.read_text())
    assert sorted(called) == sorted(POINTS)  # each point once, none missing, none unlisted
    fake = (ROOT / "tests" / "fakes" / "executor.py").read_text()
    assert set(re.findall(r'fault_point\("([^"]+)"\)', fake)) == {"start.pg", "stop.pg"}  # the executor's own
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.arm("start.typo")


def restart(rig: Rig, tmp_path: Path) -> None:
    """The scheduler process dies: a new store connection, a new controller, the same cluster."""
    rig.executor.restart()
    rig.clock.now += DOWNTIME_S
    rig.store = JobStore(open_db(tmp_path / "s.db"), clock=rig.clock)
    rig.controller = Controller(rig.store, rig.fleet, rig.executor, clock=rig.clock)
    rig.controller.recover()


def check_invariants(rig: Rig, closed_before: dict[str, Allocation]) -> None:
    running = {job.job_id for job, _ in rig.store.running()}
    assert rig.executor.detached_jobs() <= running, "a placement group or runner without a running job"
    assert running <= rig.executor.runners & rig.executor.attached, "a running job without runners"
    allocations = rig.store.allocations_since(0.0)
    for a in allocations:
        if a.allocation_id in closed_before:
            assert a == closed_before[a.allocation_id], "an allocation closed twice"
        if rig.store.get(a.job_id).state not in (JobState.RUNNING, JobState.PREEMPTING):
            assert a.end is not None and a.end >= a.start, f"allocation {a} of an ended job left open"
    held = [u for a in allocations if a.end is None for u in a.gpu_uuids]
    assert len(held) == len(set(held)), "a GPU held twice"
    awaiting = {u for c in rig.controller.cleanups.values() for u in c.gpu_uuids}
    assert not awaiting & set(held), "a GPU handed on before NVML showed it free"


def crash_at(rig: Rig, point: str) -> tuple[str, str, float]:
    """A bystander job runs; `job` crashes the controller at `point`. Returns (bystander, job,
    when the job's allocations must end: its start for a start, its exit for a stop)."""
    bystander = rig.submit("acme", JobClass.SPOT, 8, rid="bystander")
    rig.step()
    job = rig.submit("acme", JobClass.SPOT, 8, rid="job")
    if point.startswith("start."):
        faults.arm(point)
        with pytest.raises(CrashInjected):
            rig.step()
        return bystander, job, rig.clock.now
    rig.step()
    assert rig.store.get(job).state is JobState.RUNNING
    rig.executor.exit(job, 0)
    faults.arm(point)
    with pytest.raises(CrashInjected):
        rig.step()
    return bystander, job, rig.clock.now


@pytest.mark.parametrize("point", POINTS)
def test_a_crash_at_every_step_is_repaired_after_a_restart(tmp_path: Path, point: str) -> None:
    rig = Rig(tmp_path)
    bystander, job, end_at = crash_at(rig, point)
    (bystanding,) = rig.store.allocations(bystander)
    closed_before = {a.allocation_id: a for a in rig.store.allocations_since(0.0) if a.end is not None}
    restart(rig, tmp_path)
    check_invariants(rig, closed_before)
    for _ in range(4):  # releases reported, NVML samples without the job's pids, the queue served
        rig.step()
        check_invariants(rig, closed_before)
    assert rig.store.allocations(bystander) == [bystanding]  # re-attached: not restarted, not billed twice
    assert rig.executor.jobs[bystander].signals == []
    first = rig.store.allocations(job)[0]
    if point == "start.intent":  # the store never saw the start: the job simply starts after the restart
        assert first.start > end_at and rig.store.get(job).requeues == 0
    else:
        assert first.end == end_at  # never the time of the repair: the downtime is not billed
    if point.startswith("start."):
        assert rig.store.get(job).state is JobState.RUNNING  # rolled back, then placed again
    if point in ("start.store", "start.pg", "start.runners"):
        assert first.end == first.start and first.end_reason == "start_interrupted"
        assert rig.store.get(job).requeues == 0  # the crash was ours: the job's max_requeues is not spent
    if point.startswith("stop."):
        assert rig.store.get(job).state is JobState.SUCCEEDED
        assert first.end_reason == "succeeded"
    assert rig.controller.cleanups == {}  # every GPU shown free by NVML at last
    assert IntentStore.beside(rig.store).intents() == []
    collector = SchedulerCollector(TelemetryService(rig.fleet, None, False), rig.controller)  # type: ignore[arg-type]
    metrics = {m.name: m.samples[0].value for m in collector.collect() if m.samples}
    assert metrics["neocloud_scheduler_repairs"] == rig.controller.stats.repairs >= 1


def test_gpus_awaiting_nvml_stay_held_across_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig(tmp_path)
    monkeypatch.setattr(reconcile, "processes_gone", lambda *args: False)  # NVML still sees the job's process
    job = rig.submit("acme", JobClass.SPOT, 16, rid="all")
    rig.step()
    rig.executor.exit(job, 0)
    rig.step()
    rig.step()  # released: its 16 GPUs now wait for NVML
    before = dict(rig.controller.cleanups)
    assert before[job].holder is not None and before[job].pids
    restart(rig, tmp_path)
    assert rig.controller.cleanups == before  # every field, the job as the policy sees it included
    whole_fleet = rig.submit("acme", JobClass.SPOT, 16, rid="next")
    rig.step()
    assert rig.store.get(whole_fleet).state is JobState.QUEUED  # the old run forgot nothing
    monkeypatch.undo()
    rig.step()
    rig.step()
    assert rig.store.get(whole_fleet).state is JobState.RUNNING


def test_orphans_on_the_cluster_are_removed_by_the_periodic_pass(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.controller.recover()
    ended = rig.submit("acme", JobClass.SPOT, 8, rid="ended")
    rig.step()
    rig.store.finish(ended, JobState.FAILED, None, "ended behind the controller's back")
    rig.executor.pgs.add("ghost")  # a group no job of this store owns
    rig.step()
    assert {"ghost", ended} <= rig.executor.detached_jobs()  # not every step: a listing costs
    rig.controller._repairer._next = 0.0  # the interval has passed
    rig.step()
    rig.step()
    assert rig.executor.detached_jobs() == set()
    assert rig.controller.stats.repairs == 2
