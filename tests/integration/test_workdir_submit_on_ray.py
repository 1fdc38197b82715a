"""The whole path of a shipped workdir: `neocloud submit --workdir DIR` over gRPC to a real scheduler
(store, controller, policy) on a two-node local Ray cluster with agents streaming simulated GPUs; the
job runs `python3 run.py` on both nodes in the directory it shipped and succeeds, and its record
names the digest. Sandboxed where this machine can sandbox."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.scheduler.artifacts import read_bytes, root_beside
from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store.records import JobState, Role
from tests.helpers import wait_until
from tests.integration.test_scheduler_on_ray import Site

NODES = ("node-a", "node-b")
TIMEOUT_S = 60.0
RUN_PY = """\
import os
print("rank", os.environ["NEOCLOUD_RANK"], "read", open("data/input.txt").read().strip(), flush=True)
"""


@pytest.fixture
def site(
    tmp_path: Path, scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> Iterator[Site]:
    sandboxed = sandbox.probe().full
    with LocalCluster(dict.fromkeys(NODES, 1), cpus_per_node=2) as cluster:
        # The scheduler_factory's store is tmp_path/scheduler.db; uploads land beside it.
        reader = functools.partial(read_bytes, root_beside(str(tmp_path / "scheduler.db")))
        executor = RayExecutor(
            address=cluster.address, log_dir=tmp_path / "jobs", read_workdir=reader, sandbox_tenants=sandboxed
        )
        try:
            sched = scheduler_factory(executor=executor, controller_interval_s=0.2)
            agents = [
                agent_factory(sched.port, backend=SimBackend(n, 1, load=0.1), node_id=n, spool_path=str(tmp_path / n))
                for n in NODES
            ]
            store = sched.scheduler.jobs
            store.create_tenant("acme")
            tokens = {"acme": store.create_token(Role.TENANT, "acme-ci", tenant="acme")}
            store.set_setting("one_tenant_per_node", "false")
            fleet = sched.scheduler.telemetry.fleet
            wait_until(lambda: all(n in fleet.nodes for n in NODES), TIMEOUT_S, "agents")
            yield Site(sched, agents, tokens)
            sched.stop()
        finally:
            for job_id in executor.detached_jobs():
                executor.cancel(job_id, 0)
                executor.release(job_id)
            executor.shutdown()


def test_submit_with_a_workdir_runs_it_on_both_nodes(site: Site, tmp_path: Path) -> None:
    work = tmp_path / "train"
    (work / "data").mkdir(parents=True)
    (work / "run.py").write_text(RUN_PY)
    (work / "data" / "input.txt").write_text("forty-two\n")
    job_id = site.submit("acme", "--class", "on_demand", "--gpus", "2", "--gpus-per-node", "1",
                         "--workdir", str(work), "--", "python3", "run.py")  # fmt: skip
    site.wait_state(job_id, JobState.SUCCEEDED)
    job = site.store.get(job_id)
    assert job.spec.workdir_digest.startswith("sha256:")
    assert {a.node_id for a in site.store.allocations(job_id)} == set(NODES)
    logs = "".join((tmp_path / "jobs" / job_id / f"rank-{r}.log").read_text() for r in (0, 1))
    assert "rank 0 read forty-two" in logs and "rank 1 read forty-two" in logs, logs
