"""The ledger inside the scheduler: a pass, its reconciliation, and what each
tenant is billed so far, as Prometheus sees them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from neocloud.scheduler.billing.ratecard import parse_ratecard
from neocloud.scheduler.billing_runner import BillingRunner
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.metrics import MeteringCollector
from neocloud.scheduler.store import ratecards
from tests.unit.test_ledger import HOUR, batch, ingest, open_site, start_job

CARD = 'prices: {internal: {"*": "1"}, on_demand: {"*": "3.5"}, spot: {"*": "1.40"}}\n'


def test_a_pass_reconciles_and_prices_the_month_so_far(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    store, db, fleet = open_site(path)
    job = start_job(store, "one", ("GPU-a", "GPU-b"), HOUR)
    store.close_allocations(job, HOUR + 900, "succeeded")
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 1200)])

    runner = BillingRunner(path, clock=lambda: HOUR + 1800, card=parse_ratecard(CARD))
    runner.run_once()
    summary = runner.summary
    assert summary.gap == {"gpu_seconds": 0.0, "energy": 0.0}
    assert summary.gpu_seconds[("acme", "spot")] == 2 * 900
    assert summary.gpu_seconds[("", "idle")] == 2 * 900  # 1800 s of wall time per GPU so far
    assert summary.billed == {("acme", "spot"): Decimal("0.70")}  # 0.5 GPU-h x 1.40
    registry = CollectorRegistry()
    registry.register(MeteringCollector(runner, fleet))
    text = generate_latest(registry).decode()
    assert 'neocloud_tenant_billed_amount{class="spot",currency="USD",tenant="acme"} 0.7' in text
    assert 'neocloud_metering_reconciliation_gap_ratio{quantity="energy"} 0.0' in text
    runner.close()


def test_the_billed_amount_follows_a_rate_card_applied_while_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    store, db, fleet = open_site(path)
    job = start_job(store, "one", ("GPU-a", "GPU-b"), HOUR)
    store.close_allocations(job, HOUR + 900, "succeeded")
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 1200)])
    runner = BillingRunner(path, clock=lambda: HOUR + 1800, card=parse_ratecard(CARD))
    runner.run_once()
    assert runner.summary.billed == {("acme", "spot"): Decimal("0.70")}
    with db:  # `admin ratecard apply` stores a new version; no restart
        ratecards.insert(db, CARD.replace('"1.40"', '"2.00"'), "test", "operator", HOUR + 1000)
    runner.run_once()
    assert runner.summary.billed == {("acme", "spot"): Decimal("1.00")}  # 0.5 GPU-h x 2.00
    runner.close()


def test_energy_that_never_reaches_the_ledger_shows_as_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    _, db, fleet = open_site(path)
    fleet.attributor.book = AllocationBook()
    ingest(db, fleet, [batch(1, HOUR, 1200)])
    runner = BillingRunner(path, clock=lambda: HOUR + 7200)
    runner.run_once()
    assert runner.summary.gap["energy"] == 0.0
    ingest(db, fleet, [batch(2, HOUR + 1200, 600)])  # late energy for the hour...
    db.execute("DELETE FROM meter_dirty")  # ...whose re-metering mark is lost
    runner.run_once()
    assert runner.summary.gap["energy"] == pytest.approx(1 / 3, rel=1e-6)  # 600 of 1,800 s missing from the rows
    runner.close()


def test_a_pass_asked_for_while_the_loop_meters_waits_for_it(tmp_path: Path) -> None:
    """The loop's pass and a caller's (the demo's close, a test) share one connection:
    the caller's waits for the loop's, rather than failing inside its transaction
    ("cannot start a transaction within a transaction") and metering nothing."""
    path = tmp_path / "scheduler.db"
    _, db, fleet = open_site(path)
    fleet.attributor.book = AllocationBook()
    ingest(db, fleet, [batch(1, HOUR, 1200)])
    runner = BillingRunner(path, clock=lambda: HOUR + 1800)
    read_cells, inside, release = runner.ledger._cells, threading.Event(), threading.Event()

    def held_read(hour: int, held: Mapping[str, object]) -> dict[tuple[str, str], tuple[float, int, int, int, int]]:
        if not inside.is_set():  # the loop's pass, held inside its read transaction
            inside.set()
            release.wait(10)
        return read_cells(hour, held)

    runner.ledger._cells = held_read  # type: ignore[method-assign]
    loop_pass = threading.Thread(target=runner.run_once)
    loop_pass.start()
    assert inside.wait(10)
    caller = threading.Thread(target=runner.run_once)
    caller.start()
    caller.join(0.5)  # a caller that does not wait has made its pass by now
    release.set()
    loop_pass.join(10)
    caller.join(10)
    assert runner.ledger.stats.failures_total == 0
    assert runner.ledger.stats.passes_total == 2
    assert runner.summary.gap == {"gpu_seconds": 0.0, "energy": 0.0}
    runner.close()
