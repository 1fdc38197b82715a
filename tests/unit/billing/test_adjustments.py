from __future__ import annotations

from decimal import Decimal

import pytest

from neocloud.scheduler.billing.adjustments import adjustment_lines
from neocloud.scheduler.billing.invoice import BillingError, LineKind
from neocloud.scheduler.billing.rating import invoice
from tests.unit.billing.factories import DEC_START, H100, HOUR_MS, KWH_MJ, NOV, card, contract, row


def test_late_rows_become_adjustments_on_the_next_invoice() -> None:
    rows = [row("a", gpu_ms=2 * HOUR_MS, energy_mj=KWH_MJ), row("s", "spot", gpu_ms=HOUR_MS)]
    issued = invoice("acme", NOV, rows, [], [], card())  # 7.00 + 1.40 + 0.10 = 8.50
    late = [row("a", hour=1, gpu_ms=HOUR_MS, energy_mj=KWH_MJ), row("b", model=H100, gpu_ms=HOUR_MS)]
    recomputed = invoice("acme", NOV, rows + late, [], [], card())  # 10.50 + 2.50 + 1.40 + 0.20
    adj = adjustment_lines(issued, recomputed)
    assert [(a.ref_kind, a.job_class, a.gpu_model, a.quantity, a.amount) for a in adj] == [
        ("usage", "on_demand", "NVIDIA H200", Decimal("1.000000"), Decimal("3.50")),
        ("energy", "on_demand", "", Decimal("1.000000"), Decimal("0.10")),
        ("usage", "on_demand", H100, Decimal("1.000000"), Decimal("2.50")),  # a line that did not exist
    ]
    assert all(a.kind is LineKind.ADJUSTMENT and a.ref_period == NOV for a in adj)
    assert adj[0].description == "Adjustment 2026-11: On-demand NVIDIA H200 GPU-hours"
    assert issued.total + sum(a.amount for a in adj) == recomputed.total

    dec = invoice("acme", "2026-12", [row("d", start=DEC_START, gpu_ms=HOUR_MS)], [], [], card(), adjustments=adj)
    assert dec.subtotal == Decimal("3.50")  # December's own usage
    assert dec.adjustments == Decimal("6.10")
    assert dec.total == Decimal("9.60")
    assert [ln.kind for ln in dec.lines][-3:] == [LineKind.ADJUSTMENT] * 3


def test_a_vanished_line_is_credited_in_full() -> None:
    issued = invoice("acme", NOV, [row("a", gpu_ms=HOUR_MS), row("s", "spot", gpu_ms=HOUR_MS)], [], [], card())
    recomputed = invoice("acme", NOV, [row("a", gpu_ms=HOUR_MS)], [], [], card())
    (adj,) = adjustment_lines(issued, recomputed)
    assert (adj.ref_kind, adj.job_class, adj.quantity, adj.amount) == (
        "usage",
        "spot",
        Decimal("-1.000000"),
        Decimal("-1.40"),
    )


def test_no_change_means_no_adjustment() -> None:
    rows = [row("r", "reserved", contract="c-gpu")]
    inv = invoice("acme", NOV, rows, [contract(gpus=1)], [], card())
    assert adjustment_lines(inv, invoice("acme", NOV, rows, [contract(gpus=1)], [], card())) == []


def test_a_period_corrected_twice_counts_earlier_adjustments_as_billed() -> None:
    base = [row("a", gpu_ms=HOUR_MS)]
    issued = invoice("acme", NOV, base, [], [], card())
    second = invoice("acme", NOV, [*base, row("b", gpu_ms=HOUR_MS)], [], [], card())
    first_adj = adjustment_lines(issued, second)
    third = invoice("acme", NOV, [*base, row("b", gpu_ms=HOUR_MS), row("c", gpu_ms=HOUR_MS)], [], [], card())
    (adj,) = adjustment_lines(issued, third, already_adjusted=first_adj)
    assert adj.amount == Decimal("3.50")  # only the third hour: the second was adjusted already
    assert issued.total + sum(a.amount for a in [*first_adj, adj]) == third.total


def test_adjustments_of_adjustment_lines_are_not_compared() -> None:
    issued = invoice("acme", NOV, [row("a", gpu_ms=HOUR_MS)], [], [], card())
    earlier = adjustment_lines(
        invoice("acme", "2026-10", [], [], [], card()),
        invoice("acme", "2026-10", [row("o", hour=-5, gpu_ms=HOUR_MS)], [], [], card()),
    )
    with_carry = invoice("acme", NOV, [row("a", gpu_ms=HOUR_MS)], [], [], card(), adjustments=earlier)
    assert adjustment_lines(with_carry, issued) == []  # October's carried line is not November's to correct


def test_mismatched_invoices_and_misplaced_adjustments_are_refused() -> None:
    nov = invoice("acme", NOV, [], [], [], card())
    with pytest.raises(BillingError, match="not the same invoice"):
        adjustment_lines(nov, invoice("globex", NOV, [], [], [], card()))
    adj = adjustment_lines(nov, invoice("acme", NOV, [row("a")], [], [], card()))
    with pytest.raises(BillingError, match="cannot go on the 2026-11 invoice"):
        invoice("acme", NOV, [], [], [], card(), adjustments=adj)
    usage_line = invoice("acme", NOV, [row("a")], [], [], card()).lines[0]
    with pytest.raises(BillingError, match="must be adjustment lines"):
        invoice("acme", "2026-12", [], [], [], card(), adjustments=[usage_line])
    with pytest.raises(BillingError, match="already_adjusted"):
        adjustment_lines(nov, nov, already_adjusted=[usage_line])
