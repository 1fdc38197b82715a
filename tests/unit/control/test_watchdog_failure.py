"""A rank whose runner's watchdog failed (the runner stopped it, end reason watchdog_failed)
is never a silent loss: the job is requeued with a message and an event saying so, and the
scheduler counts it (neocloud_scheduler_runner_watchdog_failures_total)."""

from __future__ import annotations

from pathlib import Path

from neocloud.scheduler.executor.types import END_WATCHDOG_FAILED
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.metrics import SchedulerCollector
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.records import JobState
from tests.unit.control.test_controller import Rig

METRIC = "neocloud_scheduler_runner_watchdog_failures_total"


def watchdog_failures(rig: Rig) -> float:
    collector = SchedulerCollector(TelemetryService(rig.fleet, None, False), rig.controller)  # type: ignore[arg-type]
    (value,) = [s.value for m in collector.collect() for s in m.samples if s.name == METRIC]
    return value


def test_a_failed_watchdog_requeues_the_job_with_an_event_and_a_count(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    job_id = rig.submit("acme", JobClass.SPOT, 8)
    rig.step()
    assert rig.store.get(job_id).state is JobState.RUNNING
    assert watchdog_failures(rig) == 0
    rig.executor.exit(job_id, -9, END_WATCHDOG_FAILED)
    rig.step()
    job = rig.store.get(job_id)
    assert job.requeues == 1 and job.state in (JobState.QUEUED, JobState.RUNNING)
    messages = [e.message for e in rig.store.events_since(job_id)]
    assert any("watchdog failed" in m for m in messages), messages
    assert watchdog_failures(rig) == 1
