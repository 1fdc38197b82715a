"""Hand-computed invoices for small cases: each expected amount is worked out in the comment beside it."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.billing.currency import money
from neocloud.scheduler.billing.invoice import BillingError, Invoice, LineKind, parse_period
from neocloud.scheduler.billing.rating import invoice
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.store.records import ContractShortfall
from tests.unit.billing.factories import (
    DEC_START,
    H100,
    H200,
    HOUR_MS,
    KWH_MJ,
    NOV,
    NOV_START,
    card,
    contract,
    row,
)


def amounts(inv: Invoice) -> dict[tuple[str, ...], Decimal]:
    return {ln.key[:4]: ln.amount for ln in inv.lines}


def shortfall(contract_id: str, hours: float, *, hour: int = 0, tenant: str = "acme") -> ContractShortfall:
    return ContractShortfall(contract_id, tenant, NOV_START + hour * 3600, int(hours * HOUR_MS))


def test_on_demand_and_spot_usage_and_energy() -> None:
    rows = [
        row("a", hour=0, gpu_ms=HOUR_MS, energy_mj=KWH_MJ),  # on-demand H200
        row("a", hour=1, gpu_ms=1_000),  # 3,601,000 ms -> 60 s increment -> 3,660,000 ms
        row("b", model=H100, gpu_ms=2 * HOUR_MS),  # on-demand H100, 2 h
        row("c", "spot", gpu_ms=HOUR_MS // 2, energy_mj=KWH_MJ // 2),  # spot H200, 0.5 h, 0.5 kWh
        row("x", tenant="globex", gpu_ms=100 * HOUR_MS),  # another tenant: ignored
        row("d", hour=0, start=DEC_START, gpu_ms=100 * HOUR_MS),  # December: ignored
        row("e", hour=-1, gpu_ms=100 * HOUR_MS),  # October: ignored
        row("idle:g0", "idle", tenant="", gpu_ms=HOUR_MS),  # idle: never billed
    ]
    inv = invoice("acme", NOV, rows, [], [], card(increment_s=60))
    assert (inv.tenant, inv.period, inv.currency) == ("acme", NOV, "USD")
    assert amounts(inv) == {
        ("usage", "on_demand", H100, ""): Decimal("5.00"),  # 2 h x 2.50
        ("usage", "on_demand", H200, ""): Decimal("3.56"),  # 3,660,000 ms = 1.0166.. h x 3.50 = 3.5583..
        ("usage", "spot", H200, ""): Decimal("0.70"),  # 0.5 h x 1.40
        ("energy", "on_demand", "", ""): Decimal("0.10"),  # 1 kWh x 0.10
        ("energy", "spot", "", ""): Decimal("0.05"),  # 0.5 kWh x 0.10
    }
    assert inv.subtotal == inv.total == Decimal("9.41")
    h200 = next(ln for ln in inv.lines if ln.gpu_model == H200 and ln.job_class == "on_demand")
    assert (h200.quantity, h200.unit, h200.unit_price) == (Decimal("1.016667"), "GPU-h", Decimal("3.50"))


def test_increment_rounds_each_allocation_once_not_each_row() -> None:
    rows = [row("a", hour=h, gpu_ms=1_000) for h in range(3)]  # 3 s over three hours
    inv = invoice("acme", NOV, rows, [], [], card(increment_s=60))
    (line,) = inv.lines
    # Summed first: 3 s -> one 60 s increment. Per row it would have been 180 s.
    assert line.quantity == Decimal("0.016667")  # 60 s
    assert line.amount == Decimal("0.06")  # 60/3600 x 3.50 = 0.0583..
    two = invoice("acme", NOV, [*rows, row("b", gpu_ms=1_000)], [], [], card(increment_s=60))
    assert two.lines[0].quantity == Decimal("0.033333")  # each allocation rounds up on its own


def test_per_second_default_rounds_up_to_whole_seconds() -> None:
    inv = invoice("acme", NOV, [row("a", gpu_ms=HOUR_MS - 500)], [], [], card())
    assert inv.lines[0].quantity == Decimal("1.000000")  # 3,599.5 s -> 3,600 s
    assert inv.lines[0].amount == Decimal("3.50")


def test_amounts_round_half_away_from_zero_at_the_line() -> None:
    """The README's rounding rule: a half goes away from zero, as a customer's ROUND() does (half to even,
    the old rule, gave 0.02 here)."""
    # 36 s of H100 on-demand = 0.01 h x 2.50 = 0.025 exactly: 0.03
    inv = invoice("acme", NOV, [row("a", model=H100, gpu_ms=36_000)], [], [], card())
    assert inv.lines[0].amount == Decimal("0.03")
    # 108 s = 0.03 h x 2.50 = 0.075: 0.08
    inv = invoice("acme", NOV, [row("a", model=H100, gpu_ms=108_000)], [], [], card())
    assert inv.lines[0].amount == Decimal("0.08")
    # A negative half (a credit) goes away from zero too: -0.025 -> -0.03
    assert money(Fraction(-25, 1000), "USD") == Decimal("-0.03")


def test_reserved_commitment_included_hours_and_overage() -> None:
    c = contract(gpus=2)  # 2 GPUs over all of November: 2 x 720 h = 1,440 GPU-h included
    rows = [row("r1", "reserved", hour=h, gpu_ms=2 * HOUR_MS, contract="c-gpu", energy_mj=KWH_MJ) for h in range(720)]
    rows.append(row("r2", "reserved", gpu_ms=HOUR_MS, contract="c-gpu"))  # one more GPU-hour: overage
    inv = invoice("acme", NOV, rows, [c], [], card())
    assert amounts(inv) == {
        ("commitment", "reserved", "", "c-gpu"): Decimal("10000.00"),
        ("usage", "reserved", H200, "c-gpu"): Decimal("0.00"),  # covered by the commitment
        ("overage", "reserved", "", "c-gpu"): Decimal("3.00"),  # 1 h x 3.00
        ("energy", "reserved", "", ""): Decimal("72.00"),  # 720 kWh x 0.10
    }
    assert inv.total == Decimal("10075.00")
    usage = next(ln for ln in inv.lines if ln.kind is LineKind.USAGE)
    assert usage.quantity == Decimal("1441.000000")


def test_commitment_is_taken_without_usage_and_prorated_by_seconds() -> None:
    half = contract(gpus=2, start=NOV_START + 15 * 86400)  # Nov 16 - Dec 1: half of a 30-day month
    inv = invoice("acme", NOV, [], [half], [], card())
    (line,) = inv.lines
    assert (line.kind, line.quantity, line.amount) == (LineKind.COMMITMENT, Decimal("0.500000"), Decimal("5000.00"))
    # Included: 2 GPUs x 360 h = 720 GPU-h, so 721 GPU-h bills one hour of overage.
    rows = [row("r", "reserved", hour=400, gpu_ms=721 * HOUR_MS, contract="c-gpu")]
    inv = invoice("acme", NOV, rows, [half], [], card())
    assert amounts(inv)[("overage", "reserved", "", "c-gpu")] == Decimal("3.00")
    # A contract that ended before the period bills nothing.
    old = contract(gpus=2, start=NOV_START - 86400 * 60, end=NOV_START)
    assert invoice("acme", NOV, [], [old], [], card()).lines == ()


def test_included_hours_from_the_card_override_gpus_times_hours() -> None:
    c = card(
        """
  c-fixed:
    commitment_per_month: "1000"
    included_gpu_hours_per_month: 100
    overage_per_gpu_hour: "2.50"
    sla_credit_per_gpu_hour: "1"
"""
    )
    rows = [row("r", "reserved", gpu_ms=110 * HOUR_MS, contract="c-fixed")]
    inv = invoice("acme", NOV, rows, [contract("c-fixed", gpus=8)], [], c)
    assert amounts(inv)[("overage", "reserved", "", "c-fixed")] == Decimal("25.00")  # 10 h x 2.50


def test_power_contract_derives_gpus_from_nominal_draw() -> None:
    c = contract("c-power", power_w=5000.0, model=None)  # 5,000 W / 1,000 W = 5 GPUs x 720 h = 3,600 GPU-h
    rows = [row("p", "reserved", gpu_ms=3600 * HOUR_MS + HOUR_MS // 2, contract="c-power", model=H100)]
    inv = invoice("acme", NOV, rows, [c], [], card())
    assert amounts(inv) == {
        ("commitment", "reserved", "", "c-power"): Decimal("20000.00"),
        ("usage", "reserved", H100, "c-power"): Decimal("0.00"),
        ("overage", "reserved", "", "c-power"): Decimal("1.00"),  # 0.5 h x 2.00
    }


def test_power_contract_without_nominal_draw_or_included_hours_is_refused() -> None:
    c = card(
        """
  c-bare:
    commitment_per_month: "1"
    overage_per_gpu_hour: "1"
    sla_credit_per_gpu_hour: "1"
"""
    )
    with pytest.raises(BillingError, match=r"c-bare is a power contract .*ratecard.yaml line 23.*nominal_gpu_w"):
        invoice("acme", NOV, [], [contract("c-bare", power_w=1e6)], [], c)


def test_sla_credits_are_negative_and_capped() -> None:
    c = contract(gpus=2)
    inv = invoice("acme", NOV, [], [c], [shortfall("c-gpu", 6, hour=1), shortfall("c-gpu", 4, hour=2)], card())
    credit = amounts(inv)[("sla_credit", "reserved", "", "c-gpu")]
    assert credit == Decimal("-50.00")  # 10 h x 5.00
    assert inv.total == Decimal("9950.00")
    # 300 h x 5.00 = 1,500 > 10% of 10,000: capped at 1,000
    inv = invoice("acme", NOV, [], [c], [shortfall("c-gpu", 300)], card())
    line = next(ln for ln in inv.lines if ln.kind is LineKind.SLA_CREDIT)
    assert line.amount == Decimal("-1000.00") and "capped at 10%" in line.description
    # The cap follows the prorated commitment: half a month, cap 500
    half = contract(gpus=2, start=NOV_START + 15 * 86400)
    inv = invoice("acme", NOV, [], [half], [shortfall("c-gpu", 300, hour=500)], card())
    assert amounts(inv)[("sla_credit", "reserved", "", "c-gpu")] == Decimal("-500.00")
    # Shortfalls of another tenant or another month are not this invoice's
    other = [shortfall("c-gpu", 5, tenant="globex"), shortfall("c-gpu", 5, hour=-1)]
    assert [ln.kind for ln in invoice("acme", NOV, [], [c], other, card()).lines] == [LineKind.COMMITMENT]


def test_internal_invoice_rates_at_the_transfer_price() -> None:
    rows = [
        row("i1", "internal", tenant="internal", gpu_ms=10 * HOUR_MS, energy_mj=50 * KWH_MJ),
        row("i2", "internal", tenant="internal", model="NVIDIA B200", gpu_ms=2 * HOUR_MS),
    ]
    inv = invoice("internal", NOV, rows, [], [], card())
    assert amounts(inv) == {
        ("usage", "internal", "NVIDIA B200", ""): Decimal("2.00"),  # the "*" transfer price 1.00
        ("usage", "internal", H200, ""): Decimal("16.50"),  # 10 h x 1.65
    }  # energy at 0 for internal: no line
    assert inv.lines[0].description.startswith("Internal (transfer)")


def test_lines_come_in_a_stable_order() -> None:
    rows = [
        row("s", "spot", energy_mj=KWH_MJ),
        row("o", energy_mj=KWH_MJ),
        row("r", "reserved", contract="c-gpu", energy_mj=KWH_MJ),
    ]
    inv = invoice("acme", NOV, rows, [contract(gpus=1)], [shortfall("c-gpu", 1)], card())
    assert [(ln.kind.value, ln.job_class) for ln in inv.lines] == [
        ("commitment", "reserved"),
        ("usage", "reserved"),
        ("usage", "on_demand"),
        ("usage", "spot"),
        ("energy", "reserved"),
        ("energy", "on_demand"),
        ("energy", "spot"),
        ("sla_credit", "reserved"),
    ]


@pytest.mark.parametrize(
    ("rows", "contracts", "message"),
    [
        ([row("a"), row("a")], [], "appears twice"),
        ([row("a", "burst")], [], "unknown class 'burst'"),
        ([row("a", gpu_ms=-1)], [], "negative usage"),
        ([row("a", "reserved")], [contract(gpus=1)], "contract (none)"),
        ([row("a", "reserved", contract="c-gpu")], [contract(gpus=1, tenant="globex")], "not a contract of acme"),
        ([row("a", "spot", model=H100)], [], r"no spot price for 'NVIDIA H100': add prices.spot.'NVIDIA H100'"),
        ([], [contract("c-nope", gpus=1)], "c-nope of tenant acme has no terms in ratecard.yaml"),
        ([], [contract(gpus=0)], "neither GPUs nor power"),
    ],
)
def test_inputs_that_cannot_be_rated_are_refused(rows: list[UsageRow], contracts: list, message: str) -> None:
    with pytest.raises(BillingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        invoice("acme", NOV, rows, contracts, [], card())


def test_shortfall_for_an_unknown_contract_is_refused() -> None:
    with pytest.raises(BillingError, match="c-gpu, which is not a contract of acme"):
        invoice("acme", NOV, [], [], [shortfall("c-gpu", 1)], card())


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "", "1969-12"])
def test_bad_periods_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a month"):
        invoice("acme", bad, [], [], [], card())


def test_periods_are_utc_calendar_months() -> None:
    nov = parse_period(NOV)
    assert (nov.start, nov.end, nov.seconds) == (NOV_START, DEC_START, 30 * 86400)
    dec = parse_period("2026-12")
    assert dec.end - dec.start == 31 * 86400 and dec.start == DEC_START
    assert parse_period("2028-02").seconds == 29 * 86400  # leap year


def test_the_last_month_a_period_can_name_has_an_end() -> None:
    last = parse_period("9999-12")  # a tenant may send it: an answer, never a year-10000 error
    assert last.end - last.start == 31 * 86_400
    assert parse_period("2028-02").seconds == 29 * 86_400
