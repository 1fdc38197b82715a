"""The README's "Pricing rules", checked as a customer would: the worked example recomputed
from the usage export alone, with nothing of neocloud's rating, and compared to the invoice;
the month-boundary and increment rules; an issued invoice keeps its money and rate card."""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from decimal import Decimal
from pathlib import Path

import pytest

from neocloud.cli import main
from neocloud.config import ConfigError
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.cloudevents import write_usage_events
from neocloud.scheduler.billing.invoice import BillingError, Reason
from neocloud.scheduler.billing.ratecard import parse_ratecard
from neocloud.scheduler.billing.rating import invoice
from neocloud.scheduler.billing.render import render_json
from neocloud.scheduler.store.records import ContractShortfall
from tests.billing_reference import recompute_from_export
from tests.unit.billing.factories import DEC_START, H200, HOUR_MS, KWH_MJ, NOV, NOV_START, contract, row
from tests.unit.billing.store import open_store, put_contract, put_rows

# The README's worked example, as written there.
EXAMPLE_CARD = """\
currency: USD
billing_increment_s: 60
prices:
  internal: {"*": "1.60"}
  on_demand: {"NVIDIA H200": "3.50"}
  spot: {"NVIDIA H200": "1.40"}
energy_per_kwh: "0.10"
"""
EXAMPLE_ROWS = [
    # a1: on-demand, 2 GPUs, from 00:00 to 01:10:15.25 on 1 November: two rows, one per hour.
    row("a1", "on_demand", hour=0, gpu_ms=2 * HOUR_MS, energy_mj=5 * KWH_MJ),
    row("a1", "on_demand", hour=1, gpu_ms=1_230_500, energy_mj=4 * KWH_MJ // 10),
    # a2: spot, 1 GPU for 1,000 s.
    row("a2", "spot", hour=5, gpu_ms=1_000_000, energy_mj=KWH_MJ // 2),
]
EXAMPLE_TOTAL = Decimal("9.22")


def test_the_worked_example_recomputed_from_the_export_equals_the_invoice() -> None:
    card = parse_ratecard(EXAMPLE_CARD)
    export = io.StringIO()
    write_usage_events(EXAMPLE_ROWS, export, "site-1")
    events = [json.loads(line) for line in export.getvalue().splitlines()]
    prices = {"on_demand": Decimal("3.50"), "spot": Decimal("1.40"), "energy": Decimal("0.10")}
    mine = recompute_from_export(events, prices, 60)
    inv = invoice("acme", NOV, EXAMPLE_ROWS, [], [], card)
    theirs = {f"{ln.kind.value} {ln.job_class}": ln.amount for ln in inv.lines}
    assert mine == theirs
    # The figures the README shows, line by line.
    assert theirs == {
        "usage on_demand": Decimal("8.23"),  # 8,430,500 ms -> 8,460,000 ms = 2.35 GPU-h x 3.50 = 8.225 -> 8.23
        "usage spot": Decimal("0.40"),  # 1,000,000 ms -> 1,020,000 ms = 0.283333 GPU-h x 1.40 = 0.39666 -> 0.40
        "energy on_demand": Decimal("0.54"),  # 5.4 kWh x 0.10
        "energy spot": Decimal("0.05"),  # 0.5 kWh x 0.10
    }
    assert inv.total == EXAMPLE_TOTAL


def test_the_increment_applies_once_per_allocation_over_its_gpus_and_hours() -> None:
    """Per allocation (all its GPUs, every hour of the month), not per GPU or per row: two GPUs of
    30 s each are 60 s, one increment; per GPU it would be two."""
    card = parse_ratecard(EXAMPLE_CARD)
    one = invoice("acme", NOV, [row("a", gpu_ms=60_000)], [], [], card)  # 2 GPUs x 30 s in one row
    split = invoice("acme", NOV, [row("a", gpu_ms=30_000), row("a", hour=1, gpu_ms=30_000)], [], [], card)
    assert one.lines[0].quantity == split.lines[0].quantity == Decimal("0.016667")  # 60 s, not 120 s
    assert one.total == split.total


def test_an_allocation_crossing_a_month_is_rounded_up_in_each_month() -> None:
    """30 s in November and 45 s in December, 60 s increment: 60 s on each invoice (75 s rounded once
    would be 120 s too, but no month's invoice may wait for the next month to close)."""
    card = parse_ratecard(EXAMPLE_CARD)
    rows = [row("x", hour=719, gpu_ms=30_000), row("x", start=DEC_START, gpu_ms=45_000)]
    nov = invoice("acme", NOV, rows, [], [], card)
    dec = invoice("acme", "2026-12", rows, [], [], card)
    assert [ln.quantity for ln in nov.lines] == [ln.quantity for ln in dec.lines] == [Decimal("0.016667")]
    assert nov.total == dec.total == Decimal("0.06")  # 1/60 h x 3.50 = 0.0583 -> 0.06


def test_the_sla_credit_cap_is_a_share_of_the_prorated_commitment() -> None:
    """A contract over half of November: commitment 5,000.00 of 10,000.00; cap 10 % of that, 500.00."""
    card = parse_ratecard(
        EXAMPLE_CARD + 'contracts:\n  c-gpu: {commitment_per_month: "10000.00", overage_per_gpu_hour: "3.00",'
        ' sla_credit_per_gpu_hour: "5.00", sla_credit_cap_pct: 10}\n'
    )
    half = contract(gpus=1, end=NOV_START + 15 * 86400)
    short = [ContractShortfall("c-gpu", "acme", NOV_START, 1000 * HOUR_MS)]  # 5,000.00 of credit before the cap
    inv = invoice("acme", NOV, [], [half], short, card)
    amounts = {ln.kind.value: ln.amount for ln in inv.lines}
    assert amounts == {"commitment": Decimal("5000.00"), "sla_credit": Decimal("-500.00")}


def test_an_issued_invoice_keeps_its_money_and_rate_card_after_the_card_changes(tmp_path: Path) -> None:
    db = open_store(tmp_path / "s.db", ("acme",))
    put_rows(db, EXAMPLE_ROWS)
    old = parse_ratecard(EXAMPLE_CARD)
    issued = Books(db, old).issue("acme", NOV, now=DEC_START)
    dearer = parse_ratecard(EXAMPLE_CARD.replace('"3.50"', '"4.00"'))
    again = Books(db, dearer).invoice("acme", NOV)  # re-rendered later, under another card
    assert again == issued and render_json(again) == render_json(issued)
    assert again.total == EXAMPLE_TOTAL
    assert {ln.rate_version for ln in again.lines} == {old.version} != {dearer.version}
    # Rated afresh (not issued), the same card gives the same money, byte for byte.
    assert render_json(Books(db, old).rate("acme", NOV)) == render_json(issued)


def cli(*words: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(list(words))
    return int(done.value.code or 0), out.getvalue(), err.getvalue()


def test_the_fleet_split_lists_a_tenant_that_cannot_be_rated_and_rates_the_others(tmp_path: Path) -> None:
    """Was: one contract without terms made `neocloud usage --db` fail for the whole fleet."""
    path = tmp_path / "s.db"
    db = open_store(path, ("acme", "globex"))
    put_rows(db, [*EXAMPLE_ROWS, row("g", tenant="globex", model=H200)])
    put_contract(db, contract("c-unpriced", tenant="globex", gpus=1))
    card_file = tmp_path / "card.yaml"
    card_file.write_text(EXAMPLE_CARD)
    local = ("--db", str(path), "--rate-card", str(card_file), "--period", NOV)
    code, out, err = cli("usage", *local, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["revenue"] == [{"tenant": "acme", "total": str(EXAMPLE_TOTAL), "currency": "USD"}]
    assert [u["tenant"] for u in report["unbilled"]] == ["globex"]
    assert report["unbilled"][0]["error"].startswith("no_terms: contract c-unpriced")
    code, _, err = cli("invoice", *local, "--tenant", "globex")
    assert code != 0 and "c-unpriced" in err and "Traceback" not in err


def test_a_currency_without_an_iso_4217_minor_unit_is_refused_with_its_reason() -> None:
    with pytest.raises(ConfigError, match="is not an ISO 4217 currency with a minor unit"):
        parse_ratecard(EXAMPLE_CARD.replace("currency: USD", "currency: XYZ"))  # refused when the card is read
    card = dataclasses.replace(parse_ratecard(EXAMPLE_CARD), currency="XYZ")  # a card built in code
    with pytest.raises(BillingError, match="'XYZ' is not an ISO 4217 code") as refused:
        invoice("acme", NOV, EXAMPLE_ROWS, [], [], card)
    assert refused.value.reason is Reason.CURRENCY
