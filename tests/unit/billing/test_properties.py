"""Properties every invoice keeps, over generated usage."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from neocloud.scheduler.billing.adjustments import adjustment_lines
from neocloud.scheduler.billing.invoice import Invoice, LineKind
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.billing.rating import invoice
from neocloud.scheduler.billing.render import invoice_from_json, render_json
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.store.records import ContractShortfall
from tests.unit.billing.factories import H100, H200, HOUR_MS, NOV, NOV_START, card, contract, row

CARDS = {k: card(increment_s=k) for k in (1, 60, 3600)}
CONTRACTS = [contract(gpus=2), contract("c-power", power_w=3000.0, model=None)]
CLASSES = ("internal", "on_demand", "spot", "reserved")
HOURS_IN_NOV = 720


@st.composite
def usage(draw: st.DrawFn) -> list[UsageRow]:
    """Rows of a few allocations, each on one model and class, at distinct hours of November."""
    rows = []
    for n in range(draw(st.integers(0, 5))):
        cls = draw(st.sampled_from(CLASSES))
        model = draw(st.sampled_from([H200, H100])) if cls in ("on_demand", "internal") else H200
        cid = draw(st.sampled_from(["c-gpu", "c-power"])) if cls == "reserved" else None
        hours = draw(st.lists(st.integers(0, HOURS_IN_NOV - 1), min_size=1, max_size=4, unique=True))
        for h in hours:
            ms = draw(st.integers(0, 8 * HOUR_MS))
            mj = draw(st.integers(0, 10 * 3_600_000_000))
            rows.append(row(f"a{n}", cls, hour=h, gpu_ms=ms, energy_mj=mj, model=model, contract=cid))
    return rows


shortfalls = st.lists(
    st.builds(
        ContractShortfall,
        st.sampled_from(["c-gpu", "c-power"]),
        st.just("acme"),
        st.integers(0, HOURS_IN_NOV - 1).map(lambda h: NOV_START + h * 3600),
        st.integers(0, 400 * HOUR_MS),
    ),
    max_size=3,
)


def rate(rows: list[UsageRow], short: Sequence[ContractShortfall] = (), c: RateCard = CARDS[1]) -> Invoice:
    return invoice("acme", NOV, rows, CONTRACTS, short, c)


@settings(max_examples=150, deadline=None)
@given(usage(), shortfalls, st.sampled_from(sorted(CARDS)))
def test_total_is_the_sum_of_cent_rounded_decimal_lines(
    rows: list[UsageRow], short: list[ContractShortfall], increment: int
) -> None:
    inv = rate(rows, short, CARDS[increment])
    for line in inv.lines:
        for value in (line.quantity, line.unit_price, line.amount):
            assert type(value) is Decimal  # never a float
        assert line.amount.as_tuple().exponent == -2
        assert (line.amount < 0) == (line.kind is LineKind.SLA_CREDIT and line.amount != 0)
    assert inv.total == sum((line.amount for line in inv.lines), Decimal(0))
    assert type(inv.total) is Decimal and inv.total.as_tuple().exponent == -2
    assert len({line.key for line in inv.lines}) == len(inv.lines)


@settings(max_examples=150, deadline=None)
@given(usage(), st.randoms(use_true_random=False), st.sampled_from(sorted(CARDS)))
def test_splitting_a_row_across_two_hours_changes_nothing(
    rows: list[UsageRow], rnd: random.Random, increment: int
) -> None:
    """The increment applies to an allocation's sum, so where its time falls cannot matter."""
    if not rows:
        return
    i = rnd.randrange(len(rows))
    r = rows[i]
    taken = {x.hour for x in rows if x.allocation_id == r.allocation_id}
    free = [NOV_START + h * 3600 for h in range(HOURS_IN_NOV) if NOV_START + h * 3600 not in taken]
    ms, mj = rnd.randint(0, r.gpu_ms), rnd.randint(0, r.energy_mj)
    moved = row(
        r.allocation_id,
        r.job_class,
        hour=0,
        start=rnd.choice(free),
        gpu_ms=ms,
        energy_mj=mj,
        model=r.gpu_model,
        contract=r.contract_id,
    )
    kept = dataclasses.replace(r, gpu_ms=r.gpu_ms - ms, energy_mj=r.energy_mj - mj)
    split = [*rows[:i], kept, moved, *rows[i + 1 :]]
    assert rate(split, c=CARDS[increment]) == rate(rows, c=CARDS[increment])


@settings(max_examples=100, deadline=None)
@given(usage(), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(rows: list[UsageRow], rnd: random.Random) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert rate(shuffled) == rate(rows)


@settings(max_examples=100, deadline=None)
@given(usage(), st.sampled_from([60, 3600]))
def test_a_coarser_increment_only_adds_less_than_one_increment_per_allocation(
    rows: list[UsageRow], increment: int
) -> None:
    fine = {ln.key: ln for ln in rate(rows).lines if ln.kind is LineKind.USAGE}
    coarse = {ln.key: ln for ln in rate(rows, c=CARDS[increment]).lines if ln.kind is LineKind.USAGE}
    assert set(fine) <= set(coarse)
    for key, line in coarse.items():
        allocations = {r.allocation_id for r in rows if (r.job_class, r.gpu_model) == (key[1], key[2])}
        before = fine[key].quantity if key in fine else Decimal(0)
        extra = Fraction(line.quantity - before)
        assert 0 <= extra <= Fraction(len(allocations) * increment, 3600) + Fraction(2, 10**6)  # 2 display roundings


@settings(max_examples=100, deadline=None)
@given(usage(), usage(), shortfalls)
def test_adjustments_carry_the_issued_total_to_the_recomputed_one(
    issued_rows: list[UsageRow], late_rows: list[UsageRow], short: list[ContractShortfall]
) -> None:
    late = [
        dataclasses.replace(r, allocation_id="late-" + r.allocation_id, usage_id="late-" + r.usage_id)
        for r in late_rows
    ]
    issued = rate(issued_rows)
    recomputed = rate(issued_rows + late, short)
    adj = adjustment_lines(issued, recomputed)
    assert issued.total + sum((a.amount for a in adj), Decimal(0)) == recomputed.total
    assert all(a.amount != 0 and a.kind is LineKind.ADJUSTMENT for a in adj)
    dec = invoice("acme", "2026-12", [], CONTRACTS, [], CARDS[1], adjustments=adj)
    assert dec.adjustments == recomputed.total - issued.total


@settings(max_examples=100, deadline=None)
@given(usage(), shortfalls)
def test_json_round_trip_keeps_every_amount(rows: list[UsageRow], short: list[ContractShortfall]) -> None:
    inv = rate(rows, short)
    assert invoice_from_json(render_json(inv)) == inv
