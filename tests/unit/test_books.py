"""Invoices from the ledger: totals that match the rows, an issued invoice that
never changes, and late telemetry that becomes an adjustment on the next one."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from neocloud.domain.errors import FailedPreconditionError
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.invoice import LineKind, parse_period
from neocloud.scheduler.billing.ratecard import parse_ratecard
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.metering.ledger import Ledger
from tests.unit.test_ledger import HOUR, batch, ingest, open_site, start_job

CARD = """
currency: USD
prices:
  internal: {"*": "1.00"}
  on_demand: {"*": "3.50"}
  spot: {"*": "1.40"}
energy_per_kwh: "0.10"
"""
PERIOD = dt.datetime.fromtimestamp(HOUR, dt.UTC).strftime("%Y-%m")
NEXT = dt.datetime.fromtimestamp(parse_period(PERIOD).end, dt.UTC).strftime("%Y-%m")


def test_invoice_matches_the_ledger_and_late_energy_becomes_an_adjustment(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    store, db, fleet = open_site(path)
    job = start_job(store, "one", ("GPU-a",), HOUR)
    store.close_allocations(job, HOUR + 1800, "succeeded")
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 900)])  # telemetry for the first 900 s only, so far
    ledger = Ledger(db, clock=lambda: HOUR + 3600)
    ledger.run_pass()
    books = Books(db, parse_ratecard(CARD))

    first = books.invoice("acme", PERIOD)
    amounts = {(ln.kind, ln.job_class): ln.amount for ln in first.lines}
    assert amounts[(LineKind.USAGE, "spot")] == Decimal("0.70")  # 0.5 GPU-h x 1.40, from the allocation alone
    kwh = Decimal(500 * 900) / Decimal(3_600_000)  # 500 W for the 900 s the counter saw
    assert amounts[(LineKind.ENERGY, "spot")] == (kwh * Decimal("0.10")).quantize(Decimal("0.01"))
    assert first.total == sum((ln.amount for ln in first.lines), Decimal("0.00"))

    with pytest.raises(FailedPreconditionError):
        books.issue("acme", PERIOD, now=HOUR + 3600)  # the month has not ended
    month_end = parse_period(PERIOD).end
    issued = books.issue("acme", PERIOD, now=month_end + 1)
    assert issued == first

    ingest(db, fleet, [batch(2, HOUR + 900, 900)])  # the rest arrives late, after the invoice went out
    ledger.run_pass()
    assert books.invoice("acme", PERIOD) == issued  # an issued invoice is never silently changed
    nxt = books.invoice("acme", NEXT)
    (adj,) = [ln for ln in nxt.lines if ln.kind is LineKind.ADJUSTMENT]
    assert adj.ref_period == PERIOD and adj.amount > 0
    assert nxt.total == adj.amount  # nothing else happened in the next month
    books.issue("acme", NEXT, now=parse_period(NEXT).end + 1)
    assert books.adjustments("acme", "2099-01") == []  # carried once, not again
