"""The ledger from real telemetry messages through the ingest Fleet and the
SQLite store: rows per allocation-hour, conservation, idempotence, late data,
and attribution that survives a scheduler restart."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.metering.ledger import Ledger
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store import telemetry
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobSpec
from neocloud.v1 import telemetry_pb2 as pb

HOUR = 1_800_000_000 // 3600 * 3600  # an hour boundary
GPUS = ("GPU-a", "GPU-b")
WATTS = 500  # every GPU draws 500 W throughout: energy is 500 J per second


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[JobStore]:
    s = JobStore(open_db(db_path))
    s.create_tenant("acme", now=1.0)
    yield s
    s.close()


def hello() -> pb.Hello:
    return pb.Hello(
        node_id="node-1",
        agent_version="1.0",
        backend="sim",
        stream_epoch=7,
        gpus=[
            pb.GpuInfo(index=i, uuid=u, model="NVIDIA H200", memory_total_bytes=1 << 37, power_limit_mw=700_000)
            for i, u in enumerate(GPUS)
        ],
    )


def batch(seq: int, t0: float, seconds: int) -> pb.Batch:
    """`seconds` 1 Hz ticks from t0 and a counter reading at each end (the counter is 500 J/s × time)."""
    series = []
    for uuid in GPUS:
        ts = [round((t0 + k) * 1e6) for k in range(seconds + 1)]
        series.append(
            pb.GpuSeries(
                uuid=uuid,
                timestamp_us=ts,
                power_mw=[WATTS * 1000] * len(ts),
                gpu_util_percent=[80] * len(ts),
                memory_used_bytes=[1 << 30] * len(ts),
                energy=[
                    pb.EnergyReading(timestamp_us=t, energy_mj=round(WATTS * (t / 1e6 - HOUR + 7200) * 1e3))
                    for t in (ts[0], ts[-1])
                ],
            )
        )
    return pb.Batch(node_id="node-1", stream_epoch=7, seq=seq, agent_time_us=round((t0 + seconds) * 1e6), gpus=series)


def ingest(db: sqlite3.Connection, fleet: Fleet, batches: list[pb.Batch]) -> None:
    node = fleet.nodes["node-1"]
    for b in batches:
        fleet.apply_batch(node, b, b.agent_time_us)
    telemetry.write(db, fleet.snapshot_dirty())


def open_site(path: Path) -> tuple[JobStore, sqlite3.Connection, Fleet]:
    """A store with tenant acme, a second connection for ingest and the ledger, and node-1 registered."""
    store = JobStore(open_db(path))
    store.create_tenant("acme", now=1.0)
    fleet = Fleet()
    fleet.register(hello(), round(HOUR * 1e6))
    return store, open_db(path), fleet


def start_job(store: JobStore, name: str, gpus: tuple[str, ...], at: float) -> str:
    job = store.submit(
        JobSpec(
            tenant="acme",
            client_request_id=name,
            job_class=JobClass.SPOT,
            gpus=len(gpus),
            gpus_per_node=len(gpus),
            command=("true",),
        ),
        now=at,
    )
    store.start(job.job_id, [("node-1", gpus)], now=at)
    return job.job_id


def test_rows_per_allocation_hour_conserve_energy_and_time_and_rerun_identically(
    store: JobStore, db_path: Path
) -> None:
    db = open_db(db_path)
    fleet = Fleet()
    fleet.register(hello(), round((HOUR - 600) * 1e6))
    telemetry.write(db, fleet.snapshot_dirty())
    # GPU-a: job-1 from HOUR-300 to HOUR+1800 (crosses the hour); GPU-b idle.
    job = start_job(store, "one", ("GPU-a",), HOUR - 300)
    store.close_allocations(job, HOUR + 1800, "succeeded")
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR - 600, 1200), batch(2, HOUR + 600, 1800)])  # HOUR-600 .. HOUR+2400

    ledger = Ledger(db, clock=lambda: HOUR + 3600 + 60)
    ledger.run_pass()
    first = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT usage_id, hour, job_id, job_class, gpu_ms, energy_mj, util_gpu_ms, peak_power_mw FROM usage"
        )
    }
    by = {(r[0], r[1] or r[2]): r for r in first.values()}
    assert by[(HOUR - 3600, job)][3] == 300_000  # 300 s before the hour
    assert by[(HOUR, job)][3] == 1_800_000
    assert by[(HOUR, job)][4] == pytest.approx(500 * 1800 * 1000, rel=1e-6)  # 500 W × 1800 s
    assert by[(HOUR, job)][5] == pytest.approx(0.8 * 1_800_000, rel=1e-6)  # 80 % utilised
    assert by[(HOUR, job)][6] == 500_000
    # Per hour: allocations + idle = the counter delta and the wall time of both GPUs.
    for hour, wall_s, energy_s in ((HOUR - 3600, 2 * 600, 2 * 600), (HOUR, 2 * 3600, 2 * 2400)):
        gpu_ms, energy_mj = db.execute(
            "SELECT SUM(gpu_ms), SUM(energy_mj) FROM usage WHERE hour = ?", (hour,)
        ).fetchone()
        assert gpu_ms == wall_s * 1000
        assert energy_mj == pytest.approx(WATTS * energy_s * 1000, rel=1e-6)

    ledger.run_pass()
    ledger.meter_hour(HOUR)
    again = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT usage_id, hour, job_id, job_class, gpu_ms, energy_mj, util_gpu_ms, peak_power_mw FROM usage"
        )
    }
    assert again == first  # same ids, same numbers: nothing counted twice


def test_late_telemetry_lands_in_its_hour(store: JobStore, db_path: Path) -> None:
    db = open_db(db_path)
    fleet = Fleet()
    fleet.register(hello(), round(HOUR * 1e6))
    fleet.attributor.book = AllocationBook()
    ingest(db, fleet, [batch(1, HOUR, 600)])
    ledger = Ledger(db, clock=lambda: HOUR + 7200)
    ledger.run_pass()
    before = db.execute("SELECT SUM(energy_mj) FROM usage WHERE hour = ?", (HOUR,)).fetchone()[0]
    ingest(db, fleet, [batch(2, HOUR + 600, 1200)])  # an hour late
    assert HOUR in ledger.hours_due(HOUR + 7200)
    ledger.run_pass()
    after = db.execute("SELECT SUM(energy_mj) FROM usage WHERE hour = ?", (HOUR,)).fetchone()[0]
    assert before == pytest.approx(2 * WATTS * 600 * 1000, rel=1e-6)
    assert after == pytest.approx(2 * WATTS * 1800 * 1000, rel=1e-6)


def test_energy_acknowledged_before_a_restart_is_attributed_after_it(store: JobStore, db_path: Path) -> None:
    db = open_db(db_path)
    fleet = Fleet()
    fleet.register(hello(), round(HOUR * 1e6))
    job = start_job(store, "one", GPUS, HOUR)
    fleet.attributor.book = AllocationBook(complete_to=float("-inf"))  # the controller has not run yet
    ingest(db, fleet, [batch(1, HOUR, 600)])  # durable and acked, not attributed
    assert db.execute("SELECT COUNT(*) FROM meter_cells").fetchone()[0] == 0

    restarted = Fleet.load(db)  # the scheduler comes back
    restarted.attributor.book = AllocationBook(store.allocations_since(0))
    telemetry.write(db, restarted.snapshot_dirty())
    Ledger(db, clock=lambda: HOUR + 3600).run_pass()
    (energy,) = db.execute("SELECT SUM(energy_mj) FROM usage WHERE job_id = ?", (job,)).fetchone()
    assert energy == pytest.approx(2 * WATTS * 600 * 1000, rel=1e-6)
    # Restoring again finds nothing left: the watermark moved with the cells.
    telemetry.write(db, Fleet.load(db).snapshot_dirty())
    Ledger(db, clock=lambda: HOUR + 3600).run_pass()
    (again,) = db.execute("SELECT SUM(energy_mj) FROM usage WHERE job_id = ?", (job,)).fetchone()
    assert again == energy


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7000), st.integers(1, 4000)), max_size=3), st.integers(2, 6))
def test_any_book_metered_any_number_of_times_gives_the_same_conserving_rows(
    jobs: list[tuple[int, int]], passes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scheduler.db"
        store = JobStore(open_db(path))
        store.create_tenant("acme", now=1.0)
        db = open_db(path)
        fleet = Fleet()
        fleet.register(hello(), round(HOUR * 1e6))
        at = HOUR
        for i, (gap, length) in enumerate(jobs):  # one after another on GPU-a
            job = start_job(store, f"r{i}", ("GPU-a",), at + gap)
            store.close_allocations(job, at + gap + length, "succeeded")
            at += gap + length
        fleet.attributor.book = AllocationBook(store.allocations_since(0))
        ingest(db, fleet, [batch(1, HOUR, 7200)])
        ledger = Ledger(db, clock=lambda: HOUR + 7200)
        snapshots = []
        for _ in range(passes):
            ledger.run_pass()
            for hour in (HOUR, HOUR + 3600):
                ledger.meter_hour(hour, now=HOUR + 7200)
            snapshots.append(sorted(db.execute("SELECT * FROM usage").fetchall()))
        assert all(s == snapshots[0] for s in snapshots)
        for hour in (HOUR, HOUR + 3600):
            gpu_ms, energy_mj = db.execute(
                "SELECT SUM(gpu_ms), SUM(energy_mj) FROM usage WHERE hour = ?", (hour,)
            ).fetchone()
            assert gpu_ms == 2 * 3600 * 1000  # two GPUs' wall time, whoever held them
            assert energy_mj == pytest.approx(2 * WATTS * 3600 * 1000, rel=1e-6)
        store.close()
        db.close()


def test_an_allocation_closed_late_is_taken_out_of_every_hour_metered_since(tmp_path: Path) -> None:
    store, db, fleet = open_site(tmp_path / "scheduler.db")
    job = start_job(store, "one", ("GPU-a",), HOUR + 60)
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 3 * 3600)])
    ledger = Ledger(db, clock=lambda: HOUR + 3 * 3600 + 60)
    ledger.run_pass()
    # The executor reports, hours late, that the job ended at HOUR + 1800 (a node lost meanwhile).
    store.close_allocations(job, HOUR + 1800, "lost")
    ledger.run_pass()
    per_hour = dict(db.execute("SELECT hour, SUM(gpu_ms) FROM usage WHERE job_id = ? GROUP BY hour", (job,)))
    assert per_hour == {HOUR: 1740 * 1000}  # nothing after its end: neither time nor energy
    (total_mj,) = db.execute("SELECT SUM(energy_mj) FROM usage").fetchone()
    assert total_mj == pytest.approx(2 * WATTS * 3 * 3600 * 1000, rel=1e-6)  # the energy went to idle, not away
    (idle_ms,) = db.execute(
        "SELECT SUM(gpu_ms) FROM usage WHERE hour = ? AND job_class = 'idle'", (HOUR + 3600,)
    ).fetchone()
    assert idle_ms == 2 * 3600 * 1000


def test_a_pass_cut_short_leaves_its_hours_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, db, fleet = open_site(tmp_path / "scheduler.db")
    fleet.attributor.book = AllocationBook()
    ingest(db, fleet, [batch(1, HOUR, 600)])
    ledger = Ledger(db, clock=lambda: HOUR + 7200)
    ledger.run_pass()
    ingest(db, fleet, [batch(2, HOUR + 600, 600)])  # late energy for HOUR

    def killed(*args: object) -> None:
        raise KeyboardInterrupt  # the scheduler dies mid-pass

    monkeypatch.setattr(ledger, "compute_hour", killed)
    with pytest.raises(KeyboardInterrupt):
        ledger.run_pass()
    assert HOUR in Ledger(db, clock=lambda: HOUR + 7200).hours_due(HOUR + 7200)  # still due after a restart


def test_hours_nobody_reported_in_are_metered_too(tmp_path: Path) -> None:
    store, db, fleet = open_site(tmp_path / "scheduler.db")
    job = start_job(store, "one", ("GPU-a",), HOUR)
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 600)])
    Ledger(db, clock=lambda: HOUR + 1200).run_pass()
    Ledger(db, clock=lambda: HOUR + 4 * 3600 + 60).run_pass()  # no telemetry for hours
    per_hour = dict(db.execute("SELECT hour, SUM(gpu_ms) FROM usage WHERE job_id = ? GROUP BY hour", (job,)))
    assert per_hour == {HOUR + h * 3600: 3600 * 1000 for h in range(4)} | {HOUR + 4 * 3600: 60 * 1000}
