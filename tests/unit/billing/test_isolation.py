"""One tenant's problem stays that tenant's: a tenant whose data or terms cannot be rated
fails alone (a reason, a counter, one log line), and every other tenant's invoice is
what it would have been to the cent. On a real SQLite store."""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.rating import invoice
from neocloud.scheduler.billing.render import render_json
from neocloud.scheduler.billing_runner import BillingRunner
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.metrics import MeteringCollector
from neocloud.scheduler.store.records import ContractShortfall
from tests.unit.billing.factories import CARD_YAML, H100, H200, HOUR_MS, KWH_MJ, NOV, NOV_START, card, contract, row
from tests.unit.billing.store import open_store, put_contract, put_issued, put_rows, put_shortfall

HEALTHY = ("acme", "initech")
BROKEN = "globex"
# The test card, a power contract's terms that cannot price it (no nominal_gpu_w), and each tenant's contract.
CARD = card(
    """\
  c-bare:
    commitment_per_month: "100.00"
    overage_per_gpu_hour: "1.00"
    sla_credit_per_gpu_hour: "1.00"
"""
    + "".join(
        f'  c-gpu-{t}:\n    commitment_per_month: "5000.00"\n    overage_per_gpu_hour: "3.00"\n'
        '    sla_credit_per_gpu_hour: "5.00"\n'
        for t in (*HEALTHY, BROKEN)
    )
)


def test_a_contract_without_terms_fails_its_tenant_alone_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: the whole summary failed with a traceback every pass (10 s), and no tenant was billed
    or exported."""
    path = tmp_path / "scheduler.db"
    db = open_store(path, (*HEALTHY, BROKEN))
    put_rows(db, [row("a1", tenant="acme"), row("g1", tenant=BROKEN, gpu_ms=2 * HOUR_MS)])
    put_contract(db, contract("c-unpriced", tenant=BROKEN, gpus=2))
    runner = BillingRunner(path, clock=lambda: NOV_START + 86400, card=CARD)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            runner.run_once()
    summary = runner.summary
    assert summary.billed == {("acme", "on_demand"): Decimal("3.50")}  # 1 GPU-h x 3.50
    assert summary.billing_errors == {(BROKEN, "no_terms"): 3}  # once per pass
    assert summary.gpu_seconds[(BROKEN, "on_demand")] == 7200  # its usage is still exported
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and BROKEN in said[0].getMessage() and "c-unpriced" in said[0].getMessage()
    assert said[0].exc_info is None  # an expected error: no traceback
    assert runner.ledger.stats.failures_total == 0

    registry = CollectorRegistry()
    registry.register(MeteringCollector(runner, Fleet()))
    text = generate_latest(registry).decode()
    assert 'neocloud_billing_errors_total{reason="no_terms",tenant="globex"} 3.0' in text
    assert 'neocloud_tenant_billed_amount{class="on_demand",currency="USD",tenant="acme"} 3.5' in text
    runner.close()


def test_an_exception_inside_rating_is_that_tenants_with_its_traceback_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "scheduler.db"
    db = open_store(path, (*HEALTHY, BROKEN))
    put_rows(db, [row("a1", tenant="acme")])
    _contract_time_not_a_number(db)
    runner = BillingRunner(path, clock=lambda: NOV_START + 86400, card=CARD)
    with caplog.at_level(logging.WARNING):
        runner.run_once()
        runner.run_once()
    assert runner.summary.billing_errors == {(BROKEN, "error"): 2}
    assert runner.summary.billed == {("acme", "on_demand"): Decimal("3.50")}
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and BROKEN in tracebacks[0].getMessage()
    runner.close()


def _no_terms(db: sqlite3.Connection) -> None:
    put_contract(db, contract("c-unpriced", tenant=BROKEN, gpus=4))


def _power_without_nominal(db: sqlite3.Connection) -> None:
    put_contract(db, contract("c-bare", tenant=BROKEN, power_w=5000.0, model=None))


def _unknown_class(db: sqlite3.Connection) -> None:
    put_rows(db, [row("gx", "gold", tenant=BROKEN)])


def _reserved_under_another_contract(db: sqlite3.Connection) -> None:
    put_rows(db, [row("gr", "reserved", tenant=BROKEN, contract="c-gpu-acme")])


def _unpriced_model(db: sqlite3.Connection) -> None:
    put_rows(db, [row("gs", "spot", tenant=BROKEN, model="NVIDIA B200")])


def _foreign_shortfall(db: sqlite3.Connection) -> None:
    put_rows(db, [row("gf", tenant=BROKEN)])
    put_shortfall(db, ContractShortfall("c-gpu-acme", BROKEN, NOV_START + 3600, HOUR_MS))


def _issued_in_another_currency(db: sqlite3.Connection) -> None:
    eur = card(text=CARD_YAML.replace("currency: USD", "currency: EUR"))
    put_issued(db, BROKEN, "2026-10", render_json(invoice(BROKEN, "2026-10", [], [], [], eur)))
    put_rows(db, [row("ge", tenant=BROKEN)])


def _issued_body_corrupt(db: sqlite3.Connection) -> None:
    put_issued(db, BROKEN, "2026-09", '{"format": 2, "lines": [')
    put_rows(db, [row("gc", tenant=BROKEN)])


def _contract_time_not_a_number(db: sqlite3.Connection) -> None:
    put_contract(db, contract("c-gpu", tenant=BROKEN, gpus=1))
    db.execute("UPDATE contracts SET end = 'soon' WHERE tenant = ?", (BROKEN,))  # rating meets a bug's input


# Each way to break one tenant's data, and the reason it is counted under.
BREAKS: dict[str, tuple[Callable[[sqlite3.Connection], None], str]] = {
    "no_terms": (_no_terms, "no_terms"),
    "power_without_nominal": (_power_without_nominal, "no_terms"),
    "unknown_class": (_unknown_class, "bad_usage"),
    "reserved_under_another_contract": (_reserved_under_another_contract, "bad_usage"),
    "unpriced_model": (_unpriced_model, "no_price"),
    "foreign_shortfall": (_foreign_shortfall, "bad_usage"),
    "issued_in_another_currency": (_issued_in_another_currency, "currency"),
    "issued_body_corrupt": (_issued_body_corrupt, "invalid"),
    "contract_time_not_a_number": (_contract_time_not_a_number, "error"),
}


@st.composite
def usage(draw: st.DrawFn, tenant: str) -> list[UsageRow]:
    """A few allocations of the tenant in November, any class but reserved (its contract is fixed below)."""
    rows = []
    for n in range(draw(st.integers(0, 3))):
        cls = draw(st.sampled_from(["internal", "on_demand", "spot", "reserved"]))
        model = draw(st.sampled_from([H200, H100])) if cls in ("on_demand", "internal") else H200
        for h in draw(st.lists(st.integers(0, 719), min_size=1, max_size=3, unique=True)):
            rows.append(
                row(
                    f"{tenant}-{n}",
                    cls,
                    hour=h,
                    tenant=tenant,
                    model=model,
                    gpu_ms=draw(st.integers(0, 8 * HOUR_MS)),
                    energy_mj=draw(st.integers(0, 5 * KWH_MJ)),
                    contract=f"c-gpu-{tenant}" if cls == "reserved" else None,
                )
            )
    return rows


@settings(max_examples=40, deadline=None)
@given(
    st.fixed_dictionaries({t: usage(t) for t in (*HEALTHY, BROKEN)}),
    st.lists(st.sampled_from(sorted(BREAKS)), min_size=1, max_size=3, unique=True),
)
def test_breaking_one_tenant_leaves_every_other_invoice_unchanged_to_the_cent(
    rows: dict[str, list[UsageRow]], how: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = open_store(Path(tmp) / "s.db", (*HEALTHY, BROKEN))
        for t in (*HEALTHY, BROKEN):
            put_contract(db, contract(f"c-gpu-{t}", tenant=t, gpus=1))
            put_rows(db, rows[t])
        put_shortfall(db, ContractShortfall("c-gpu-acme", "acme", NOV_START, HOUR_MS))
        books = Books(db, CARD)
        before = books.invoices(NOV)
        assert not before.failures and set(before.invoices) == {*HEALTHY, BROKEN}

        for name in how:
            BREAKS[name][0](db)
        after = books.invoices(NOV)
        assert [(f.tenant, f.reason.value) for f in after.failures] == [(BROKEN, after.failures[0].reason.value)]
        assert after.failures[0].reason.value in {BREAKS[name][1] for name in how}
        for t in HEALTHY:
            assert after.invoices[t] == before.invoices[t]  # every line, every cent
            assert render_json(after.invoices[t]) == render_json(before.invoices[t])
        db.close()


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_each_break_is_counted_under_its_reason(name: str, tmp_path: Path) -> None:
    db = open_store(tmp_path / "s.db", (*HEALTHY, BROKEN))
    put_rows(db, [row("a1", tenant="acme")])
    BREAKS[name][0](db)
    rated = Books(db, CARD).invoices(NOV)
    assert [(f.tenant, f.reason.value) for f in rated.failures] == [(BROKEN, BREAKS[name][1])]
    assert rated.invoices["acme"].total == Decimal("3.50")
