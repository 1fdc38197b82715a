"""The controller places tenant work only on nodes whose runners can sandbox it (the
executor's RayNodeInfo.sandboxed, as probed on each node); a node that cannot takes the
lab's internal work, which runs without a tenant (so unsandboxed)."""

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
    assert rig.executor.jobs[internal].job.tenant is None  # the lab's own: not sandboxed
