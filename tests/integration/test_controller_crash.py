"""A controller crash in the middle of a start and of a stop, on a real Ray cluster
on this machine, then a restart over the same store and the same cluster (a new
RayExecutor and Controller, as a restarted scheduler makes): no placement group or
runner is left without a running job, no running job without runners, and the
job is billed for no time it did not run. Every fault point is covered on the
in-memory executor in tests/unit/control/test_crash_repair.py; here the ones
where Ray holds something half made.

One cluster for the module (two 8-GPU nodes); each case gets a fresh store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.domain import faults
from neocloud.domain.faults import CrashInjected
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import Released
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.intents import IntentStore
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobSpec, JobState

NODES = ("node-a", "node-b")
TIMEOUT_S = 45.0
WAIT_FOR_GO = 'echo ready; while [ ! -f "$GO" ]; do sleep 0.05; done'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    with LocalCluster(dict.fromkeys(NODES, 8), cpus_per_node=2) as c:
        yield c, tmp_path_factory.mktemp("logs")


class Site:
    """One scheduler's controller over a store and the shared cluster, its agents' telemetry
    applied in-process at every step (real Fleet, real SQLite, real Ray)."""

    def __init__(self, cluster: LocalCluster, log_dir: Path, db: Path) -> None:
        self.cluster, self.log_dir, self.db = cluster, log_dir, db
        self.fleet = Fleet()
        self.backends = {n: SimBackend(n, 8, load=0.1) for n in NODES}
        self.seq = 0
        for node_id, backend in self.backends.items():
            self.fleet.register(hello(node_id, 1, backend.inventory(), "sim").hello, now_us()).connected = True
        self.report()
        self.store = JobStore(open_db(db))
        self.store.create_tenant("acme")
        self.store.set_setting("min_runtime_s", "0")
        self.start_controller()

    def start_controller(self) -> None:
        # The jobs here wait for a file of the test's tmp dir, which the sandbox hides.
        self.executor = RayExecutor(address=self.cluster.address, log_dir=self.log_dir, sandbox_tenants=False)
        self.controller = Controller(self.store, self.fleet, self.executor)
        self.controller.recover()

    def restart(self) -> None:
        """The scheduler died: its executor's memory goes, the store and the cluster stay."""
        self.executor.shutdown()  # leaves a cluster it did not start running
        self.store = JobStore(open_db(self.db))
        self.start_controller()

    def report(self) -> None:
        self.seq += 1
        for node_id, backend in self.backends.items():
            batch = build_batch(node_id, backend.inventory(), [backend.read(True)], now_us())
            batch.seq = self.seq
            self.fleet.apply_batch(self.fleet.nodes[node_id], batch, now_us())

    def step(self) -> None:
        self.report()
        self.controller.step()

    def step_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.step()
            time.sleep(0.05)

    def crash_at(self, point: str) -> float:
        """Step until the armed point crashes the controller; returns when."""
        faults.arm(point)
        deadline = time.monotonic() + TIMEOUT_S
        with pytest.raises(CrashInjected):
            while time.monotonic() < deadline:
                self.step()
                time.sleep(0.05)
        return time.time()

    def running_with_runners(self, job_id: str) -> bool:
        return self.store.get(job_id).state is JobState.RUNNING and bool(self.controller._state.tracking(job_id).pids)

    def check_invariants(self) -> None:
        running = {job.job_id for job, _ in self.store.running()}
        assert self.executor.detached_jobs() <= running, "a placement group or runner without a running job"
        assert running <= self.executor.detached_jobs(), "a running job without runners"
        held = [u for job, allocations in self.store.running() for a in allocations for u in a.gpu_uuids]
        assert len(held) == len(set(held)), "a GPU held twice"


def now_us() -> int:
    return int(time.time() * 1e6)


@pytest.fixture
def site(cluster: tuple[LocalCluster, Path], tmp_path: Path) -> Iterator[Site]:
    s = Site(cluster[0], cluster[1], tmp_path / "s.db")
    yield s
    faults.disarm()
    clear(s.executor)
    s.executor.shutdown()  # disconnects this driver, or the cluster cannot be shut down


def clear(executor: RayExecutor) -> None:
    """Release whatever a (failed) case left on the shared cluster."""
    left = executor.detached_jobs()
    for job_id in left:
        executor.remove(job_id)
    released: set[str] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while released < left and time.monotonic() < deadline:
        released |= {e.job_id for e in executor.poll() if isinstance(e, Released)}
        time.sleep(0.05)


def submit(site: Site, tmp_path: Path, rid: str) -> tuple[str, Path]:
    go = tmp_path / f"go-{rid}"
    spec = JobSpec("acme", rid, JobClass.SPOT, 8, 8, command=("sh", "-c", WAIT_FOR_GO), env={"GO": str(go)})
    return site.store.submit(spec).job_id, go


@pytest.mark.parametrize("point", ["start.store", "start.pg", "start.runners"])
def test_a_start_cut_short_on_ray_is_rolled_back_unbilled(site: Site, tmp_path: Path, point: str) -> None:
    job, go = submit(site, tmp_path, "job")
    site.crash_at(point)
    # Ray holds a group (and runners) of a start half done, or nothing yet
    assert (job in site.executor.detached_jobs()) is (point != "start.store")
    site.restart()
    first = site.store.allocations(job)[0]
    assert (first.end, first.end_reason) == (first.start, "start_interrupted")  # not a second billed
    site.step_until(lambda: site.running_with_runners(job), "the rolled-back job to start again")
    site.check_invariants()
    assert site.store.get(job).requeues == 0  # the crash was ours: the job's max_requeues is not spent
    assert IntentStore.beside(site.store).intents() == []
    go.touch()
    site.step_until(lambda: site.store.get(job).state is JobState.SUCCEEDED, "the job to finish")


@pytest.mark.parametrize("point", ["stop.store", "stop.release", "stop.pg"])
def test_a_stop_cut_short_on_ray_is_finished_at_its_own_end_time(site: Site, tmp_path: Path, point: str) -> None:
    job, go = submit(site, tmp_path, "job")
    site.step_until(lambda: site.running_with_runners(job), "the job to run")
    go.touch()
    ended_by = site.crash_at(point)
    time.sleep(1.0)  # the scheduler is down for a while: none of it may be billed
    site.restart()
    (allocation,) = site.store.allocations(job)
    assert allocation.end is not None and allocation.end <= ended_by
    assert site.store.get(job).state is JobState.SUCCEEDED
    site.step_until(lambda: not site.executor.detached_jobs(), "the half-released job's group to be removed")
    site.step_until(lambda: not site.controller.cleanups, "NVML to show its GPUs free")
    site.check_invariants()
    assert site.store.allocations(job) == [allocation]  # closed once
    assert IntentStore.beside(site.store).intents() == [] and site.controller.stats.repairs >= 1
