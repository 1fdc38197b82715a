"""The controller's counters count episodes once, and a job's message follows its state
(issue 12 item 5): a scripted scenario on the real store and policy, in-memory executor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.metrics import SchedulerCollector
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass
from neocloud.scheduler.store.records import JobState
from tests.unit.control.test_controller import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def counters(rig: Rig) -> dict[str, float]:
    """The controller's counters as Prometheus reads them."""
    collector = SchedulerCollector(TelemetryService(rig.fleet, None, False), rig.controller)  # type: ignore[arg-type]
    names = ("placements", "preemptions", "reclaim_warnings", "step_errors", "repairs")
    wanted = {f"neocloud_scheduler_{n}_total" for n in names}
    return {
        s.name.removeprefix("neocloud_scheduler_").removesuffix("_total"): s.value
        for m in collector.collect()
        for s in m.samples
        if s.name in wanted
    }


def steps(rig: Rig, count: int, seconds: float = 1.0) -> None:
    for _ in range(count):
        rig.step(seconds)


def test_each_counter_counts_each_episode_once(rig: Rig) -> None:
    rig.store.set_setting("min_runtime_s", "60")
    rig.store.set_setting("internal_floor_gpus", "16")
    a = rig.submit("acme", JobClass.SPOT, 8, rid="a")
    b = rig.submit("acme", JobClass.SPOT, 8, rid="b")
    rig.step()
    assert {rig.store.get(j).state for j in (a, b)} == {JobState.RUNNING}
    # Episode 1: internal demand needs a node, both spot jobs are younger than the minimum runtime.
    i1 = rig.submit(INTERNAL_TENANT, JobClass.INTERNAL, 8, rid="i1")
    steps(rig, 30)  # thirty passes of the same warning
    (victim,) = rig.controller.warned
    assert counters(rig)["reclaim_warnings"] == 1
    assert rig.executor.jobs[victim].signals == [f"warn {rig.controller.warned[victim]}"]  # delivered once
    steps(rig, 1, 40.0)  # past the minimum runtime: preempted, then released, confirmed free, and i1 placed
    steps(rig, 4)
    assert rig.store.get(i1).state is JobState.RUNNING
    # ... on the node its preemption freed
    assert {x.node_id for x in rig.store.allocations(i1)} == {x.node_id for x in rig.store.allocations(victim)}
    assert rig.store.get(i1).message == ""  # it waited with a reason; running, it has none
    assert counters(rig) == {
        "placements": 3,
        "preemptions": 1,
        "reclaim_warnings": 1,
        "step_errors": 0,
        "repairs": 0,
    }
    # Episode 2: the requeued spot job gets its node back once i1 ends; internal demand for both
    # nodes warns both spot jobs (one of them young again) for ten passes: two jobs warned once each.
    rig.executor.exit(i1, 0)
    steps(rig, 4)
    assert rig.store.get(victim).state is JobState.RUNNING
    i2 = rig.submit(INTERNAL_TENANT, JobClass.INTERNAL, 16, rid="i2")
    steps(rig, 10)
    assert rig.controller.warned.keys() == {a, b}
    rig.store.request_cancel(i2)
    steps(rig, 3)
    assert rig.controller.warned == {}
    assert counters(rig) == {
        "placements": 4,
        "preemptions": 1,
        "reclaim_warnings": 3,
        "step_errors": 0,
        "repairs": 0,
    }


def test_a_failing_step_counts_one_step_error(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = [RuntimeError("store on fire")]

    def apply_events() -> None:
        if failures:
            raise failures.pop()

    monkeypatch.setattr(rig.controller._reconciler, "apply_events", apply_events)
    rig.controller.interval_s = 0.01

    async def run_a_while() -> None:
        task = asyncio.ensure_future(rig.controller.run())
        while rig.controller.stats.steps < 3:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(run_a_while(), 10.0))
    assert counters(rig)["step_errors"] == 1 and rig.controller.stats.steps >= 3


def test_a_job_that_starts_loses_its_pending_message(rig: Rig) -> None:
    spot = rig.submit("acme", JobClass.SPOT, 16, rid="spot")
    rig.step()
    rig.store.create_tenant("beta")
    od = rig.submit("beta", JobClass.ON_DEMAND, 8, rid="od")
    rig.step()
    assert rig.store.get(od).message == "preempting 1 spot job to make room (notice sent)"
    steps(rig, 4)  # the spot job exits, is requeued and released, NVML confirms; the on-demand job starts
    assert rig.store.get(od).state is JobState.RUNNING
    assert rig.store.get(od).message == ""
    assert rig.store.get(spot).state is JobState.QUEUED and rig.store.get(spot).message != ""
