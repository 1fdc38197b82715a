"""The controller places tenant work only on nodes whose runners can sandbox it (the
executor's RayNodeInfo.sandboxed, as probed on each node); a node that cannot takes the
lab's internal work, which the runner sandboxes as its own tenant wherever the node can."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from neocloud.scheduler.executor.types import RayNodeInfo
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass
from neocloud.scheduler.store.records import JobState
from tests.unit.control.test_controller import Rig


def test_tenant_jobs_avoid_the_unsandboxed_node_internal_work_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    fake_nodes = rig.executor.nodes

    def nodes() -> dict[str, RayNodeInfo]:
        found = fake_nodes()
        return {n: dataclasses.replace(i, sandboxed=n != "n1") for n, i in found.items()}

    monkeypatch.setattr(rig.executor, "nodes", nodes)
    jobs = [rig.submit("acme", JobClass.ON_DEMAND, 8, rid=rid) for rid in ("a", "b")]
    rig.step()
    rig.step()
    states = {j: rig.store.get(j).state for j in jobs}
    assert sorted(states.values()) == [JobState.QUEUED, JobState.RUNNING], states  # n1 is free, but cannot sandbox
    (running,) = [j for j, s in states.items() if s is JobState.RUNNING]
    assert [n for n, _ in rig.executor.jobs[running].placement] == ["n2"]
    assert rig.executor.jobs[running].job.tenant == "acme"
    internal = rig.submit(INTERNAL_TENANT, JobClass.INTERNAL, 8, rid="i")
    rig.step()
    assert rig.store.get(internal).state is JobState.RUNNING
    assert [n for n, _ in rig.executor.jobs[internal].placement] == ["n1"]
    # The lab's own: marked internal (so it may run unsandboxed here), under its own tenant (sandboxed elsewhere).
    internal_job = rig.executor.jobs[internal].job
    assert (internal_job.tenant, internal_job.internal) == (INTERNAL_TENANT, True)
    assert rig.executor.jobs[running].job.internal is False


def test_an_internal_teams_job_is_internal_under_the_teams_own_tenant(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.store.create_tenant("vision-team", internal=True)
    job_id = rig.submit("vision-team", JobClass.INTERNAL, 8)
    rig.step()
    assert rig.store.get(job_id).state is JobState.RUNNING
    assert (rig.executor.jobs[job_id].job.tenant, rig.executor.jobs[job_id].job.internal) == ("vision-team", True)
