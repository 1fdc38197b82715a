"""The whole scheduler on a real multi-node Ray cluster on this machine: agents
stream simulated GPUs, tenants submit through the CLI over gRPC, the policy
places and preempts, jobs run on Ray.

One cluster for the module (three 8-GPU nodes); each test gets a fresh
scheduler and store. The node-loss test runs last: it removes a node.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from ray.util import placement_group_table
from ray.util.placement_group import get_placement_group

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.cli import main
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.ratecard import parse_ratecard
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import Released, pg_name
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store.records import JobState, Role
from tests.helpers import wait_until

NODES = ("node-a", "node-b", "node-c")
TIMEOUT_S = 60.0
# A job that notices its preemption: the notice file appears, then SIGTERM.
NOTICED = (
    "trap 'test -s \"$NEOCLOUD_PREEMPT_NOTICE_FILE\" && echo notice-seen > {out}; exit 0' TERM; "
    "touch {out}.ready; while true; do sleep 0.1; done"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, RayExecutor]]:
    with LocalCluster(dict.fromkeys(NODES, 8), cpus_per_node=2) as c:
        # The jobs here signal through files of the test's tmp dir, which the sandbox hides.
        executor = RayExecutor(address=c.address, log_dir=tmp_path_factory.mktemp("logs"), sandbox_tenants=False)
        yield c, executor
        executor.shutdown()


@dataclass
class Site:
    sched: BackgroundScheduler
    agents: list[Agent]
    tokens: dict[str, str]

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.sched.scheduler.jobs

    def cli(self, who: str, words: tuple[str, ...], *args: str) -> dict:  # type: ignore[type-arg]
        """`neocloud WORDS... --server ... ARGS` as `who`, parsed from its --json output."""
        out = io.StringIO()
        connection = ["--server", f"127.0.0.1:{self.sched.port}", "--insecure", "--token", self.tokens[who], "--json"]
        with redirect_stdout(out), pytest.raises(SystemExit) as done:
            main([*words, *connection, *args])
        assert done.value.code == 0, out.getvalue()
        return json.loads(out.getvalue())

    def submit(self, who: str, *args: str) -> str:
        return str(self.cli(who, ("submit",), *args)["job_id"])

    def state(self, job_id: str) -> JobState:
        return self.store.get(job_id).state

    def wait_state(self, job_id: str, state: JobState, timeout_s: float = TIMEOUT_S) -> None:
        wait_until(lambda: self.state(job_id) is state, timeout_s, f"job {job_id} to be {state.value}")


def placed(job_id: str) -> bool:
    """The job's placement group holds its bundles on the cluster."""
    try:
        return bool(placement_group_table(get_placement_group(pg_name(job_id))).get("state") == "CREATED")
    except ValueError:  # not made yet
        return False


@pytest.fixture
def site(
    cluster: tuple[LocalCluster, RayExecutor],
    scheduler_factory: Callable[..., BackgroundScheduler],
    agent_factory: Callable[..., Agent],
    tmp_path: Path,
) -> Iterator[Site]:
    _, executor = cluster
    sched = scheduler_factory(executor=executor, controller_interval_s=0.2)
    agents = [
        agent_factory(sched.port, backend=SimBackend(n, 8, load=0.1), node_id=n, spool_path=str(tmp_path / f"{n}.db"))
        for n in NODES
        if n in executor.nodes() and executor.nodes()[n].alive
    ]
    store = sched.scheduler.jobs
    for tenant in ("acme", "beta"):
        store.create_tenant(tenant)
    tokens = {
        "operator": store.create_token(Role.OPERATOR, "op"),
        "internal": store.create_token(Role.INTERNAL, "lab"),
        "acme": store.create_token(Role.TENANT, "acme-ci", tenant="acme"),
        "beta": store.create_token(Role.TENANT, "beta-ci", tenant="beta"),
    }
    store.set_setting("min_runtime_s", "0")
    fleet = sched.scheduler.telemetry.fleet
    wait_until(lambda: all(a.config.node_id in fleet.nodes for a in agents), TIMEOUT_S, "agents")
    site = Site(sched, agents, tokens)
    yield site
    site.sched.stop()  # first, so its controller no longer polls the executor
    clear(executor)


def clear(executor: RayExecutor) -> None:
    """Stop and release whatever a test left on the shared cluster."""
    left = executor.detached_jobs()
    executor.reattach(left)
    for job_id in left:
        executor.cancel(job_id, 0)
        executor.release(job_id)
    released: set[str] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while released < left and time.monotonic() < deadline:
        released |= {e.job_id for e in executor.poll() if isinstance(e, Released)}
        time.sleep(0.05)


def test_internal_spike_preempts_spot_with_notice_and_grace(site: Site, tmp_path: Path) -> None:
    site.store.set_setting("internal_floor_gpus", "24")
    notice = tmp_path / "notice.txt"
    spot = site.submit(
        "acme", "--class", "spot", "--gpus", "24", "--grace", "5", "--", "sh", "-c", NOTICED.format(out=notice)
    )
    wait_until(lambda: Path(f"{notice}.ready").exists(), TIMEOUT_S, "the spot job's process to start")
    internal = site.submit("internal", "--class", "internal", "--gpus", "16", "--", "sleep", "30")
    site.wait_state(internal, JobState.RUNNING)
    assert notice.read_text().strip() == "notice-seen"  # notice file, then SIGTERM, inside the grace
    job = site.store.get(spot)
    assert job.state is JobState.QUEUED and job.requeues == 1
    assert {a.end_reason for a in site.store.allocations(spot)} == {"preempted"}
    kinds = [e.kind for e in site.store.events_since(spot)]
    assert kinds.index("preemption_notice") < kinds.index("requeued")


def test_reserved_tenant_reclaims_lent_capacity(site: Site, tmp_path: Path) -> None:
    now = time.time()
    card = tmp_path / "ratecard.yaml"  # the contract's terms come first: one the card cannot price is refused
    card.write_text(
        'prices: {internal: {"*": "1"}, on_demand: {"*": "3.5"}, spot: {"*": "1.4"}}\n'
        'contracts: {beta-reserved: {commitment_per_month: "1000.00", overage_per_gpu_hour: "3.00",'
        ' sla_credit_per_gpu_hour: "2.00", sla_credit_cap_pct: 10}}\n'
    )
    site.cli("operator", ("admin", "ratecard", "apply"), str(card))
    contract = site.cli("operator", ("admin", "contract", "create"), "--id", "beta-reserved", "--tenant", "beta",
                        "--gpus", "8", "--start", str(now - 60), "--end", str(now + 3600))  # fmt: skip
    spot = site.submit("acme", "--class", "spot", "--gpus", "24", "--grace", "1", "--", "sleep", "60")
    site.wait_state(spot, JobState.RUNNING)  # borrows the contract's idle 8 GPUs
    reserved = site.submit("beta", "--class", "reserved", "--contract", contract["contract_id"], "--gpus", "8",
                           "--", "sleep", "30")  # fmt: skip
    site.wait_state(reserved, JobState.RUNNING)
    assert site.store.get(spot).requeues == 1


def test_sixteen_gpu_gang_lands_on_two_whole_nodes(site: Site) -> None:
    gang = site.submit("acme", "--class", "on_demand", "--gpus", "16", "--gpus-per-node", "8", "--", "sleep", "20")
    site.wait_state(gang, JobState.RUNNING)
    allocations = site.store.allocations(gang)
    assert sorted(len(a.gpu_uuids) for a in allocations) == [8, 8]
    assert len({a.node_id for a in allocations}) == 2


def test_scheduler_restart_mid_run_loses_and_duplicates_nothing(
    site: Site, scheduler_factory: Callable[..., BackgroundScheduler], cluster: tuple[LocalCluster, RayExecutor]
) -> None:
    job = site.submit("acme", "--class", "on_demand", "--gpus", "8", "--", "sh", "-c", "sleep 4; echo done")
    site.wait_state(job, JobState.RUNNING)
    (before,) = site.store.allocations(job)
    port = site.sched.port
    site.sched.stop()
    restarted = scheduler_factory(port=port, executor=cluster[1], controller_interval_s=0.2)
    site.sched = restarted
    store = restarted.scheduler.jobs
    wait_until(lambda: store.get(job).state is JobState.SUCCEEDED, TIMEOUT_S, "the job to finish after the restart")
    (after,) = store.allocations(job)
    assert after.allocation_id == before.allocation_id and after.start == before.start  # re-attached, not restarted
    assert store.get(job).requeues == 0


def test_a_job_is_invoiced_from_its_allocation_and_the_energy_counter(site: Site) -> None:
    """Agents -> scheduler on Ray -> a job -> the ledger -> an invoice: GPU-hours from the
    allocation alone, energy from the counter, and every joule of those GPUs accounted for."""
    job = site.submit("acme", "--gpus", "8", "--class", "spot", "--", "sleep", "2")
    site.wait_state(job, JobState.SUCCEEDED)
    (alloc,) = site.store.allocations(job)
    assert alloc.end is not None
    db_path = site.sched.scheduler.config.db_path

    def attributed_past_end() -> bool:
        with sqlite3.connect(db_path) as db:
            marks = [db.execute("SELECT attributed_to_us FROM meter_watermarks WHERE uuid = ?", (u,)).fetchone()
                     for u in alloc.gpu_uuids]  # fmt: skip
        return all(m is not None and m[0] > (alloc.end + 0.5) * 1e6 for m in marks)

    wait_until(attributed_past_end, TIMEOUT_S, "energy attributed past the job's end")
    for agent in site.agents:
        agent.stop()  # nothing more arrives: the ledger and the source can be compared exactly
    fleet = site.sched.scheduler.telemetry.fleet
    wait_until(lambda: fleet.attributor.pending_mj < 1, TIMEOUT_S, "the last readings to be attributed")
    # The periodic commit that attributed the last readings may still be writing them: commit()
    # waits for it. The ledger's own pass may be running too: run_once() waits for it.
    site.sched.call(site.sched.scheduler.telemetry.commit())
    site.sched.scheduler.metering.run_once()

    card = parse_ratecard('prices: {internal: {"*": "1"}, on_demand: {"*": "3.5"}, spot: {"*": "1.4"}}\n'
                          'energy_per_kwh: "0.10"\n')  # fmt: skip
    period = datetime.fromtimestamp(alloc.start, UTC).strftime("%Y-%m")
    with sqlite3.connect(db_path) as raw:
        books = Books(raw, card)
        inv = books.invoice("acme", period)
        (job_mj,) = raw.execute("SELECT SUM(energy_mj) FROM usage WHERE job_id = ?", (job,)).fetchone()
        marks = f"SELECT SUM(attributed_total_mj) FROM meter_watermarks WHERE uuid IN ({','.join('?' * 8)})"
        (attributed_mj,) = raw.execute(marks, alloc.gpu_uuids).fetchone()
        idle = [f"idle:{u}" for u in alloc.gpu_uuids]
        rows = f"SELECT SUM(energy_mj) FROM usage WHERE allocation_id IN ({','.join('?' * 9)})"
        (rows_mj,) = raw.execute(rows, (alloc.allocation_id, *idle)).fetchone()
    lines = {(ln.kind.value, ln.job_class): ln for ln in inv.lines}
    # The ledger keeps GPU-milliseconds; the invoice rounds them up to the second, once per allocation
    # (ceil of the float seconds would bill 29 s for 28.0003, which the ledger holds as 28,000 ms).
    gpu_ms = round(8 * (alloc.end - alloc.start) * 1000)
    gpu_hours = Decimal(math.ceil(gpu_ms / 1000)) / 3600
    assert abs(lines[("usage", "spot")].quantity - gpu_hours) < Decimal("0.000001")
    assert abs(lines[("energy", "spot")].quantity - Decimal(job_mj) / Decimal(3_600_000_000)) < Decimal("0.000001")
    assert job_mj > 0
    # Those GPUs' rows (the job's and their idle time) hold all that was attributed to them.
    assert rows_mj == pytest.approx(attributed_mj, rel=1e-6)
    counter_mj = sum(fleet.nodes[alloc.node_id].gpus[u].energy.total_mj for u in alloc.gpu_uuids)
    assert attributed_mj == pytest.approx(counter_mj, rel=1e-9)  # every joule the counters saw


def test_an_array_then_a_job_after_it_then_one_after_a_failure(site: Site, tmp_path: Path) -> None:
    """Array tasks run on Ray with their index; a job --after-ok the array starts once every task
    succeeded; a job after a failing job is cancelled, naming it, and never reaches Ray."""
    out = tmp_path / "out"
    out.mkdir()
    script = f'echo "$NEOCLOUD_ARRAY_JOB_ID" > {out}/task-$NEOCLOUD_ARRAY_TASK_ID'
    array = site.submit("acme", "--array", "0-2", "--name", "prep", "--cpus", "1", "--", "sh", "-c", script)
    check = f"test -f {out}/task-0 && test -f {out}/task-1 && test -f {out}/task-2 && touch {out}/after"
    after = site.submit("acme", "--after-ok", array, "--name", "reduce", "--", "sh", "-c", check)
    failing = site.submit("acme", "--", "sh", "-c", "exit 5")
    doomed = site.submit("acme", "--after-ok", failing, "--", "true")
    site.wait_state(after, JobState.SUCCEEDED)
    tasks = site.cli("acme", ("jobs",), "--array", array)
    assert sorted(t["array_task_id"] for t in tasks) == [0, 1, 2]
    assert {t["state"] for t in tasks} == {site.cli("acme", ("job", after))["state"]}  # all succeeded, as it did
    assert {(out / f"task-{i}").read_text().strip() for i in range(3)} == {array}
    assert (out / "after").exists()
    site.wait_state(doomed, JobState.CANCELLED)
    assert site.store.get(doomed).message == f"dependency {failing} failed (after-ok)"
    assert site.store.allocations(doomed) == []


def test_a_killed_ray_node_requeues_its_jobs(site: Site, cluster: tuple[LocalCluster, RayExecutor]) -> None:
    """Last in the module: it removes node-c from the shared cluster."""
    job = site.submit("acme", "--class", "on_demand", "--gpus", "24", "--", "sleep", "60")
    site.wait_state(job, JobState.RUNNING)
    wait_until(lambda: placed(job), TIMEOUT_S, "its placement group")  # running on Ray, not only in the store
    killed_at = time.time()
    cluster[0].remove_node("node-c")
    wait_until(lambda: site.store.get(job).requeues == 1, TIMEOUT_S, "the job to be requeued")
    ends = {a.node_id: a for a in site.store.allocations(job)}
    assert {a.end_reason for a in ends.values()} == {"lost"}, site.store.events_since(job)
    assert all(a.end is not None and a.end >= killed_at - 1 for a in ends.values())
