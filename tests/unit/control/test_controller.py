"""The controller's bookkeeping, against the real store and policy and an
in-memory executor (tests/integration/test_scheduler_on_ray.py uses Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.domain.errors import UnavailableError
from neocloud.scheduler.control import reconcile
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.metering.shortfall import undelivered_gpus
from neocloud.scheduler.metrics import SchedulerCollector
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.intents import IntentStore
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobSpec, JobState
from neocloud.scheduler.store.shortfalls import ShortfallStore
from tests.fakes.executor import FakeExecutor

NODES = ("n1", "n2")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, tmp_path: Path, tenants: tuple[str, ...] = ("acme",)) -> None:
        """The store is tmp_path/s.db (made already, with its tenants, when `tenants` is empty)."""
        self.clock = Clock()
        self.fleet = Fleet()
        self.backends = {n: SimBackend(n, 8, load=0.2, clock_us=lambda: int(self.clock.now * 1e6)) for n in NODES}
        self.seq = 0
        for node_id, backend in self.backends.items():
            node = self.fleet.register(hello(node_id, 1, backend.inventory(), "sim").hello, int(self.clock.now * 1e6))
            node.connected = True
        self.report()
        self.store = JobStore(open_db(tmp_path / "s.db"), clock=self.clock)
        for tenant in tenants:
            self.store.create_tenant(tenant)
        self.store.set_setting("min_runtime_s", "0")
        self.executor = FakeExecutor(NODES, clock=self.clock)
        self.controller = Controller(self.store, self.fleet, self.executor, clock=self.clock)

    def report(self) -> None:
        """Every node's agent sends a batch stamped now."""
        self.seq += 1
        for node_id, backend in self.backends.items():
            batch = build_batch(node_id, backend.inventory(), [backend.read(True)], int(self.clock.now * 1e6))
            batch.seq = self.seq
            self.fleet.apply_batch(self.fleet.nodes[node_id], batch, int(self.clock.now * 1e6))

    def step(self, seconds: float = 1.0) -> None:
        self.clock.now += seconds
        self.report()
        self.controller.step()

    def submit(self, tenant: str, job_class: JobClass, gpus: int, per_node: int = 8, rid: str = "") -> str:
        spec = JobSpec(tenant, rid or f"r{gpus}{tenant}{job_class}", job_class, gpus, per_node, command=("true",))
        return self.store.submit(spec).job_id


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_job_runs_succeeds_and_its_gpus_wait_for_nvml(rig: Rig) -> None:
    job_id = rig.submit("acme", JobClass.SPOT, 8)
    rig.step()
    assert rig.store.get(job_id).state is JobState.RUNNING
    (allocation,) = rig.store.allocations(job_id)
    assert len(allocation.gpu_uuids) == 8
    rig.executor.exit(job_id, 0)
    rig.step()
    assert rig.store.get(job_id).state is JobState.SUCCEEDED
    assert rig.executor.released == [job_id]
    collector = SchedulerCollector(TelemetryService(rig.fleet, None, False), rig.controller)  # type: ignore[arg-type]
    metrics = {
        m.name: m.samples[0].value for m in collector.collect() if m.name.startswith("neocloud_scheduler") and m.samples
    }
    assert metrics["neocloud_scheduler_placements"] == 1 and metrics["neocloud_scheduler_step_errors"] == 0
    rig.step()  # the Released event: the GPUs now wait for a fresh NVML sample without the job's pids
    assert job_id in rig.controller.cleanups
    whole_fleet = rig.submit("acme", JobClass.SPOT, 16, rid="all")
    rig.clock.now += 1.0
    rig.controller.step()  # no sample taken since the release yet: those GPUs are not handed out
    assert rig.store.get(whole_fleet).state is JobState.QUEUED
    rig.step()
    assert job_id not in rig.controller.cleanups
    rig.step()
    assert rig.store.get(whole_fleet).state is JobState.RUNNING
    (closed,) = rig.store.allocations(job_id)
    assert closed.end is not None and closed.end_reason == "succeeded"


def test_failure_and_cancel(rig: Rig) -> None:
    failing = rig.submit("acme", JobClass.SPOT, 8, rid="f")
    cancelled = rig.submit("acme", JobClass.SPOT, 8, rid="c")
    rig.step()
    rig.executor.exit(failing, 3)
    rig.store.request_cancel(cancelled)
    rig.step()
    rig.step()
    assert rig.store.get(failing).state is JobState.FAILED and rig.store.get(failing).exit_code == 3
    assert rig.store.get(cancelled).state is JobState.CANCELLED
    assert rig.executor.jobs[cancelled].signals == ["cancel"]


def test_internal_demand_preempts_spot_which_is_requeued(rig: Rig) -> None:
    rig.store.set_setting("internal_floor_gpus", "16")
    spot = rig.submit("acme", JobClass.SPOT, 16)
    rig.step()
    assert rig.store.get(spot).state is JobState.RUNNING
    internal = rig.submit(INTERNAL_TENANT, JobClass.INTERNAL, 16)
    rig.step()
    assert rig.executor.jobs[spot].signals and rig.executor.jobs[spot].signals[0].startswith("preempt")
    for _ in range(4):  # exit and requeue -> released -> NVML confirms -> placed
        rig.step()
    assert rig.store.get(spot).state is JobState.QUEUED and rig.store.get(spot).requeues == 1
    assert rig.store.get(internal).state is JobState.RUNNING
    ends = {a.end_reason for a in rig.store.allocations(spot)}
    assert ends == {"preempted"}
    assert internal not in rig.controller.pending
    assert rig.controller.stats.preemptions == 1 and rig.controller.stats.placements == 2
    # The requeued job is told why it waits, where its owner looks.
    assert rig.store.get(spot).message == rig.controller.pending[spot] != ""


def test_restart_reattaches_running_jobs_and_requeues_vanished_ones(rig: Rig) -> None:
    kept = rig.submit("acme", JobClass.SPOT, 8, rid="k")
    vanished = rig.submit("acme", JobClass.SPOT, 8, rid="v")
    rig.step()
    rig.executor.vanish(vanished)  # its runners died with the old scheduler
    rig.executor.restart()
    restarted = Controller(rig.store, rig.fleet, rig.executor, clock=rig.clock)
    restarted.recover()
    assert rig.store.get(kept).state is JobState.RUNNING
    assert rig.store.get(vanished).state is JobState.QUEUED
    assert [a.end_reason for a in rig.store.allocations(vanished)] == ["lost"]
    assert len(rig.store.allocations(kept, open_only=True)) == 1  # not restarted, not billed twice


def test_reserved_gpus_the_fleet_cannot_deliver_are_recorded_for_credits(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    shortfalls = ShortfallStore(open_db(tmp_path / "s.db"))
    rig.controller.shortfalls = shortfalls
    rig.store.create_tenant("lab")
    contract = rig.store.create_contract("lab", rig.clock.now - 1, rig.clock.now + 86_400, gpus=12).contract_id
    rig.step()
    rig.step()
    assert shortfalls.total(contract) == 0  # 16 healthy GPUs: all 12 can be delivered
    rig.store.cordon("n2", "maintenance")
    rig.step()  # each step charges the time since the last one as it finds the fleet
    rig.step(2.0)
    assert shortfalls.total(contract) == 4 * 3_000  # 8 deliverable of 12, for 3 s
    assert rig.controller.view.undelivered == {(contract, "lab"): 4}  # exported for the alert
    assert undelivered_gpus([], (), (), rig.clock.now) == {}


def test_gpus_waiting_for_nvml_are_not_preempted_for_twice(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "processes_gone", lambda *args: False)  # NVML still sees the victim
    rig.store.set_setting("internal_floor_gpus", "8")
    first = rig.submit("acme", JobClass.SPOT, 8, rid="a")
    second = rig.submit("acme", JobClass.SPOT, 8, rid="b")
    rig.step()
    assert {rig.store.get(j).state for j in (first, second)} == {JobState.RUNNING}
    rig.submit(INTERNAL_TENANT, JobClass.INTERNAL, 8)
    for _ in range(5):  # the victim exits and is released, but its GPUs are not confirmed free yet
        rig.step()
    assert rig.controller.stats.preemptions == 1  # one node's worth was needed, one was taken
    states = sorted(rig.store.get(j).state.value for j in (first, second))
    assert states == ["queued", "running"]


def test_the_allocation_book_is_reread_only_when_allocations_change(rig: Rig) -> None:
    rig.step()
    first = rig.fleet.attributor.book
    rig.step()
    moved = rig.fleet.attributor.book
    assert moved.complete_to == first.complete_to + 1.0 and moved._by_gpu is first._by_gpu  # not reread
    job_id = rig.submit("acme", JobClass.SPOT, 8)
    rig.step()
    (allocation,) = rig.store.allocations(job_id)
    book = rig.fleet.attributor.book
    assert book._by_gpu is not first._by_gpu  # a new allocation: reread
    assert {book.owner_at(u, rig.clock.now) for u in allocation.gpu_uuids} == {allocation.allocation_id}


def test_a_reserved_job_ending_is_not_a_shortfall_of_its_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path)
    shortfalls = ShortfallStore(open_db(tmp_path / "s.db"))
    rig.controller.shortfalls = shortfalls
    rig.store.create_tenant("lab")
    contract = rig.store.create_contract("lab", rig.clock.now - 1, rig.clock.now + 86_400, gpus=8).contract_id
    other = rig.submit("acme", JobClass.ON_DEMAND, 8, rid="s")  # the other node: nothing to reclaim there
    spec = JobSpec("lab", "r", JobClass.RESERVED, 8, 8, command=("true",), contract_id=contract)
    reserved = rig.store.submit(spec).job_id
    rig.step()
    assert {rig.store.get(j).state for j in (other, reserved)} == {JobState.RUNNING}
    monkeypatch.setattr(reconcile, "processes_gone", lambda *args: False)  # its GPUs not yet confirmed free
    rig.executor.exit(reserved, 0)
    for _ in range(3):
        rig.step()
    assert shortfalls.total(contract) == 0  # the contract's own GPUs, freeing: delivered


def test_what_the_spec_asks_of_its_ranks_reaches_the_executor(rig: Rig) -> None:
    spec = JobSpec("acme", "ray", JobClass.SPOT, 16, 8, command=("python", "tune.py"), ray=True, cpus=4)
    job_id = rig.store.submit(spec).job_id
    rig.step()
    started = rig.executor.jobs[job_id].job
    assert (started.ray, started.cpus, started.command, started.ray_token) == (True, 4, ["python", "tune.py"], "")
    assert started.uid_offset == rig.store.uid_offset("acme") == 1  # its own uid on every node


def test_a_node_gone_between_placement_and_start_sends_the_job_back_unspent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = rig.submit("acme", JobClass.SPOT, 8)
    real_start = rig.executor.start

    def node_gone(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(rig.executor, "start", real_start)  # once
        raise UnavailableError("node n1 has no live Ray worker")

    monkeypatch.setattr(rig.executor, "start", node_gone)
    rig.step()
    job = rig.store.get(job_id)
    assert job.state is JobState.QUEUED and job.requeues == 0 and "could not start" in job.message
    assert IntentStore.beside(rig.store).intents() == []  # the start intent is cleared
    rig.step()
    assert rig.store.get(job_id).state is JobState.RUNNING  # placed again at the next pass
