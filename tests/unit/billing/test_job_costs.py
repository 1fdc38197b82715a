"""Each job's cost (reports.job_costs, the `cost` of `neocloud usage --by job`): its share of
the invoice's GPU-time usage lines, rounded up per allocation as the invoice rounds, split
in minor units so that the jobs' costs add up to the usage lines exactly, in any currency."""

from __future__ import annotations

import dataclasses
import random
from decimal import Decimal
from pathlib import Path

import pytest

from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.invoice import Invoice, LineKind
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.billing.reports import job_costs
from neocloud.scheduler.metering.usage import UsageRow
from tests.unit.billing.factories import CARD_YAML, DEC_START, H100, H200, NOV, NOV_START, card, contract, row
from tests.unit.billing.store import open_store, put_contract, put_rows


def rate(
    tmp_path: Path, rows: list[UsageRow], rate_card: RateCard, gpus: int = 0
) -> tuple[Invoice, dict[str, Decimal]]:
    """The tenant's November invoice from a real store, and its jobs' costs."""
    db = open_store(tmp_path / "store.db", ("acme",))
    put_rows(db, rows)
    if gpus:
        put_contract(db, contract("c-gpu", gpus=gpus))
    books = Books(db, rate_card)
    invoice = books.rate("acme", NOV)
    allocations = books.allocation_totals(NOV_START, DEC_START, "acme")
    return invoice, job_costs(invoice, allocations, rate_card.billing_increment_s)


def usage_total(invoice: Invoice) -> Decimal:
    return sum((ln.amount for ln in invoice.lines if ln.kind is LineKind.USAGE), Decimal(0))


def test_the_odd_cent_goes_to_the_largest_remainder_so_jobs_add_up_to_the_line(tmp_path: Path) -> None:
    """Three spot minutes: 0.07 on the invoice, 0.0233 each exactly; rounding each job alone
    would show 0.06. Equal remainders: the first job id takes the cent."""
    rows = [row(a, "spot", gpu_ms=60_000) for a in ("a", "b", "c")]
    invoice, costs = rate(tmp_path, rows, card(increment_s=60))
    assert usage_total(invoice) == Decimal("0.07")
    assert costs == {"job-a": Decimal("0.03"), "job-b": Decimal("0.02"), "job-c": Decimal("0.02")}


def test_a_job_is_billed_per_allocation_as_the_invoice_bills_it(tmp_path: Path) -> None:
    """job-x: one allocation, 30 s in each of two hours = 60 s, one increment. job-y: two
    allocations of 30 s = two increments, 120 s."""
    y = [dataclasses.replace(row(a, gpu_ms=30_000), job_id="job-y") for a in ("y1", "y2")]
    rows = [row("x", gpu_ms=30_000), row("x", hour=1, gpu_ms=30_000), *y]
    invoice, costs = rate(tmp_path, rows, card(increment_s=60))
    assert costs == {"job-x": Decimal("0.06"), "job-y": Decimal("0.12")}  # 1/60 h and 1/30 h x 3.50
    assert sum(costs.values()) == usage_total(invoice)


def test_reserved_usage_costs_nothing_and_energy_is_no_jobs(tmp_path: Path) -> None:
    rows = [row("r", "reserved", gpu_ms=7_200_000, energy_mj=10**12, contract="c-gpu"), row("od", energy_mj=10**12)]
    invoice, costs = rate(tmp_path, rows, card(), gpus=8)
    assert costs == {"job-r": Decimal("0.00"), "job-od": Decimal("3.50")}
    assert any(ln.kind is LineKind.ENERGY for ln in invoice.lines)  # on the invoice, not on a job
    assert sum(costs.values()) == usage_total(invoice)


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_random_months_of_jobs_add_up_to_the_usage_lines_in_any_currency(tmp_path: Path, currency: str) -> None:
    rng = random.Random(f"job-costs-{currency}")
    rate_card = card(increment_s=rng.choice([1, 60, 3600]), text=CARD_YAML.replace("USD", currency))
    for attempt in range(20):
        rows = []
        for a in range(rng.randint(1, 12)):
            cls = rng.choice(["on_demand", "spot", "reserved"])
            model = H100 if cls == "on_demand" and rng.random() < 0.5 else H200
            for h in rng.sample(range(720), rng.randint(1, 4)):
                rows.append(row(f"{attempt}-{a}", cls, hour=h, gpu_ms=rng.randint(0, 8 * 3_600_000), model=model,
                                contract="c-gpu" if cls == "reserved" else None))  # fmt: skip
        invoice, costs = rate(tmp_path / str(attempt), rows, rate_card, gpus=8)
        assert sum(costs.values()) == usage_total(invoice), (currency, attempt)
        assert set(costs) == {r.job_id for r in rows}
