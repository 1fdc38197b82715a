"""Rate one tenant's usage rows for one calendar month into an invoice. Pure: no I/O, no clock.

What is billed, and how:
- Rows of other tenants, rows whose hour lies outside the period, and idle rows
  are ignored (so a caller may pass a wider slice of the ledger); a row id seen
  twice, an unknown class, or negative quantities are errors, never guessed at.
- GPU-time: each allocation's rows in the period (all its GPUs of one model,
  every hour of this month) are summed first, then rounded up to the card's
  billing increment once: per allocation and month, never per row, hour or GPU.
  An allocation that crosses a month boundary is rounded up in each month.
- internal / on_demand / spot: GPU-hours by class and model at the card's
  price (internal at its transfer price, on an invoice for tenant "internal").
- reserved: each contract of the tenant that overlaps the period bills its
  commitment prorated by seconds; its usage is listed at 0 (covered); usage
  beyond the included GPU-hours is overage at the contract's price.
  Included GPU-hours: the card's `included_gpu_hours_per_month` prorated, or
  gpus x hours of the contract inside the period, or for a power contract
  power_w / nominal_gpu_w GPUs x those hours.
- energy: kWh per class at the card's pass-through price (lines at price 0 are left out).
- SLA credits: undelivered reserved GPU-hours x the contract's credit price,
  capped at its % of the period's (prorated) commitment; negative.
Rounding: see invoice.py (exact until each line, then the currency's minor unit,
half away from zero). Every line names the version of the rate card that priced it
(RateCard.version).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from neocloud.scheduler.billing.currency import UnknownCurrencyError, money
from neocloud.scheduler.billing.invoice import (
    MJ_PER_KWH,
    MS_PER_HOUR,
    BillingError,
    Invoice,
    Line,
    LineKind,
    Period,
    Reason,
    exact,
    parse_period,
    shown,
)
from neocloud.scheduler.billing.ratecard import BILLABLE_CLASSES, INTERNAL, RESERVED, ContractTerms, RateCard
from neocloud.scheduler.metering.usage import IDLE_CLASS, UsageRow
from neocloud.scheduler.store.records import ContractRecord, ContractShortfall

logger = logging.getLogger(__name__)

_CLASS_LABEL = {INTERNAL: "Internal (transfer)", RESERVED: "Reserved", "on_demand": "On-demand", "spot": "Spot"}


@dataclass(frozen=True, slots=True)
class _Contract:
    """A contract of this tenant that overlaps the period, with its terms."""

    record: ContractRecord
    terms: ContractTerms
    fraction: Fraction  # of the period the contract covers
    included_ms: Fraction  # GPU-ms included in the period
    commitment: Fraction  # exact, before rounding


def invoice(
    tenant: str,
    period: str,
    rows: Iterable[UsageRow],
    contracts: Iterable[ContractRecord],
    shortfalls: Iterable[ContractShortfall],
    card: RateCard,
    *,
    adjustments: Sequence[Line] = (),
) -> Invoice:
    """The invoice of `tenant` for calendar month `period` ("YYYY-MM", UTC)."""
    p = parse_period(period)
    cur = card.currency
    try:
        money(Fraction(0), cur)
    except UnknownCurrencyError as e:
        raise BillingError(f"{card.source}: {e}", Reason.CURRENCY) from e
    book = _book(tenant, p, contracts, card)
    usage_ms, energy_mj = _sum_usage(tenant, p, rows, book, card.billing_increment_s)

    lines: list[Line] = []
    for cid in sorted(book):
        c = book[cid]
        lines.append(
            Line(
                kind=LineKind.COMMITMENT,
                description=f"Commitment {cid}",
                quantity=shown(c.fraction),
                unit="month",
                unit_price=c.terms.commitment_per_month,
                amount=money(c.commitment, cur),
                job_class=RESERVED,
                contract_id=cid,
            )
        )
    for (cls, model, cid), ms in sorted(usage_ms.items(), key=lambda kv: _class_sort(kv[0])):
        lines.append(_usage_line(cls, model, cid, ms, card))
    reserved_ms: dict[str, int] = defaultdict(int)
    for (cls, _, cid), ms in usage_ms.items():
        if cls == RESERVED:
            reserved_ms[cid] += ms
    for cid in sorted(reserved_ms):
        over = reserved_ms[cid] - book[cid].included_ms
        if over > 0:
            price = book[cid].terms.overage_per_gpu_hour
            hours = over / MS_PER_HOUR
            included = format(shown(book[cid].included_ms / MS_PER_HOUR).normalize(), ",f")
            lines.append(
                Line(
                    kind=LineKind.OVERAGE,
                    description=f"Reserved overage {cid}, beyond {included} GPU-h included",
                    quantity=shown(hours),
                    unit="GPU-h",
                    unit_price=price,
                    amount=money(hours * exact(price), cur),
                    job_class=RESERVED,
                    contract_id=cid,
                )
            )
    for cls in BILLABLE_CLASSES:
        price = card.energy_price(cls)
        if energy_mj.get(cls, 0) > 0 and price > 0:
            kwh = Fraction(energy_mj[cls], MJ_PER_KWH)
            lines.append(
                Line(
                    kind=LineKind.ENERGY,
                    description=f"Energy pass-through, {_CLASS_LABEL[cls].lower()}",
                    quantity=shown(kwh),
                    unit="kWh",
                    unit_price=price,
                    amount=money(kwh * exact(price), cur),
                    job_class=cls,
                )
            )
    lines.extend(_credit_lines(tenant, p, shortfalls, book, cur))
    lines = [dataclasses.replace(line, rate_version=card.version) for line in lines]
    lines.extend(_checked_adjustments(p, adjustments))  # priced when their period was
    logger.debug("invoice %s %s: %d line(s), rate card %s", tenant, p.name, len(lines), card.version)
    return Invoice(tenant=tenant, period=p.name, currency=cur, lines=tuple(lines))


def _book(tenant: str, p: Period, contracts: Iterable[ContractRecord], card: RateCard) -> dict[str, _Contract]:
    """The tenant's contracts that overlap the period, by id."""
    book: dict[str, _Contract] = {}
    for record in contracts:
        if record.tenant != tenant:
            continue
        if record.contract_id in book:
            raise BillingError(f"contract {record.contract_id} is given twice")
        c = _contract(record, p, card)
        if c is not None:
            book[record.contract_id] = c
    return book


def _contract(record: ContractRecord, p: Period, card: RateCard) -> _Contract | None:
    overlap = min(exact(record.end), Fraction(p.end)) - max(exact(record.start), Fraction(p.start))
    if overlap <= 0:
        return None
    terms = card.contracts.get(record.contract_id)
    if terms is None:
        raise BillingError(
            f"contract {record.contract_id} of tenant {record.tenant} has no terms in {card.source}: "
            f"add contracts.{record.contract_id} (commitment_per_month, overage_per_gpu_hour, sla_credit_per_gpu_hour)",
            Reason.NO_TERMS,
        )
    fraction = overlap / p.seconds
    if terms.included_gpu_hours_per_month is not None:
        included_ms = exact(terms.included_gpu_hours_per_month) * fraction * MS_PER_HOUR
    elif record.gpus > 0:
        included_ms = record.gpus * overlap * 1000
    elif record.power_w > 0 and terms.nominal_gpu_w is not None:
        included_ms = exact(record.power_w) / exact(terms.nominal_gpu_w) * overlap * 1000
    elif record.power_w > 0:
        raise BillingError(
            f"contract {record.contract_id} is a power contract ({record.power_w:g} W): its terms "
            f"({terms.where or card.source}) need included_gpu_hours_per_month or nominal_gpu_w",
            Reason.NO_TERMS,
        )
    else:
        raise BillingError(
            f"contract {record.contract_id} holds neither GPUs nor power: it cannot be billed", Reason.NO_TERMS
        )
    commitment = exact(terms.commitment_per_month) * fraction
    return _Contract(record, terms, fraction, included_ms, commitment)


def _sum_usage(
    tenant: str, p: Period, rows: Iterable[UsageRow], book: dict[str, _Contract], increment_s: int
) -> tuple[dict[tuple[str, str, str], int], dict[str, int]]:
    """GPU-ms by (class, model, contract) after the increment rule, and mJ by class."""
    seen: set[str] = set()
    per_allocation: dict[tuple[str, str, str, str], int] = defaultdict(int)
    energy_mj: dict[str, int] = defaultdict(int)
    ignored = 0
    for row in rows:
        if row.tenant != tenant or not p.start <= row.hour < p.end or row.job_class == IDLE_CLASS:
            ignored += 1
            continue
        if row.usage_id in seen:
            raise BillingError(f"usage row {row.usage_id} appears twice: it would be billed twice", Reason.BAD_USAGE)
        seen.add(row.usage_id)
        if row.job_class not in BILLABLE_CLASSES:
            raise BillingError(f"usage row {row.usage_id} has unknown class {row.job_class!r}", Reason.BAD_USAGE)
        if row.gpu_ms < 0 or row.energy_mj < 0:
            raise BillingError(
                f"usage row {row.usage_id} has negative usage ({row.gpu_ms} ms, {row.energy_mj} mJ)", Reason.BAD_USAGE
            )
        cid = ""
        if row.job_class == RESERVED:
            cid = row.contract_id or ""
            if cid not in book:
                raise BillingError(
                    f"usage row {row.usage_id} is reserved under contract {cid or '(none)'}, "
                    f"which is not a contract of {tenant} active in {p.name}",
                    Reason.BAD_USAGE,
                )
        per_allocation[(row.allocation_id, row.job_class, row.gpu_model, cid)] += row.gpu_ms
        energy_mj[row.job_class] += row.energy_mj
    if ignored:
        logger.debug(
            "invoice %s %s: %d row(s) of other tenants, other periods or idle ignored", tenant, p.name, ignored
        )
    usage_ms: dict[tuple[str, str, str], int] = defaultdict(int)
    for (_, cls, model, cid), ms in per_allocation.items():
        usage_ms[(cls, model, cid)] += billed_ms(ms, increment_s)
    return {k: v for k, v in usage_ms.items() if v > 0}, dict(energy_mj)


def billed_ms(ms: int, increment_s: int) -> int:
    """An allocation's GPU-ms of one month as billed: rounded up to the increment, once per allocation."""
    increment_ms = increment_s * 1000
    return -(-ms // increment_ms) * increment_ms


def _class_sort(key: tuple[str, str, str]) -> tuple[int, str, str]:
    cls, model, cid = key
    return BILLABLE_CLASSES.index(cls), model, cid


def _usage_line(cls: str, model: str, cid: str, ms: int, card: RateCard) -> Line:
    hours = Fraction(ms, MS_PER_HOUR)
    if cls == RESERVED:  # paid for by the commitment and any overage line
        price, description = Decimal(0), f"Reserved {model} GPU-hours under {cid} (see commitment)"
    else:
        found = card.gpu_hour_price(cls, model)
        if found is None:
            raise BillingError(
                f"{card.source} has no {cls} price for {model!r}: add prices.{cls}.'{model}' or '*'", Reason.NO_PRICE
            )
        price, description = found, f"{_CLASS_LABEL[cls]} {model} GPU-hours"
    return Line(
        kind=LineKind.USAGE,
        description=description,
        quantity=shown(hours),
        unit="GPU-h",
        unit_price=price,
        amount=money(hours * exact(price), card.currency),
        job_class=cls,
        gpu_model=model,
        contract_id=cid,
    )


def _credit_lines(
    tenant: str, p: Period, shortfalls: Iterable[ContractShortfall], book: dict[str, _Contract], cur: str
) -> list[Line]:
    undelivered: dict[str, int] = defaultdict(int)
    for s in shortfalls:
        if s.tenant != tenant or not p.start <= s.hour < p.end:
            continue
        if s.contract_id not in book:
            raise BillingError(
                f"shortfall for contract {s.contract_id}, which is not a contract of {tenant} in {p.name}",
                Reason.BAD_USAGE,
            )
        if s.undelivered_gpu_ms < 0:
            raise BillingError(
                f"shortfall for contract {s.contract_id} is negative ({s.undelivered_gpu_ms} ms)", Reason.BAD_USAGE
            )
        undelivered[s.contract_id] += s.undelivered_gpu_ms
    lines = []
    for cid in sorted(undelivered):
        c = book[cid]
        hours = Fraction(undelivered[cid], MS_PER_HOUR)
        price = c.terms.sla_credit_per_gpu_hour
        credit = hours * exact(price)
        cap = c.commitment * exact(c.terms.sla_credit_cap_pct) / 100  # of this month's prorated commitment
        note = ""
        if credit > cap:
            credit, note = cap, f", capped at {c.terms.sla_credit_cap_pct}% of this month's commitment"
        if hours > 0:
            lines.append(
                Line(
                    kind=LineKind.SLA_CREDIT,
                    description=f"SLA credit {cid}, undelivered GPU-hours{note}",
                    quantity=shown(hours),
                    unit="GPU-h",
                    unit_price=price,
                    amount=money(-credit, cur),
                    job_class=RESERVED,
                    contract_id=cid,
                )
            )
    return lines


def _checked_adjustments(p: Period, adjustments: Sequence[Line]) -> list[Line]:
    for a in adjustments:
        if a.kind is not LineKind.ADJUSTMENT:
            raise BillingError(f"adjustments must be adjustment lines (from adjustment_lines()), not {a.kind.value}")
        if not a.ref_period or a.ref_period >= p.name:
            raise BillingError(f"an adjustment for {a.ref_period or '(no period)'} cannot go on the {p.name} invoice")
    return sorted(adjustments, key=lambda a: (a.ref_period, a.key))
