"""A customer's own check of its invoice, shared by the tests that recompute one: the README's
pricing rules applied to the usage export with nothing of neocloud's rating."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction
from typing import Any


def recompute_from_export(
    events: list[dict[str, Any]], card: dict[str, Decimal], increment_s: int
) -> dict[str, Decimal]:
    """The README's rules, as a customer applies them to the CloudEvents export: per allocation and
    month, sum gpu_ms, round up to the increment, hours x price, round half up to cents; energy per
    class, kWh x price, rounded the same way."""
    ms: dict[tuple[str, str, str], int] = defaultdict(int)
    mj: dict[str, int] = defaultdict(int)
    for e in events:
        d = e["data"]
        ms[(d["allocation"], d["class"], d["model"])] += d["gpu_ms"]
        mj[d["class"]] += d["energy_mj"]
    step = Decimal(increment_s * 1000)
    usage: dict[str, Decimal] = defaultdict(Decimal)
    for (_, cls, _), total in ms.items():
        usage[cls] += (Decimal(total) / step).to_integral_value(ROUND_CEILING) * step
    cent = Decimal("0.01")
    out = {
        f"usage {cls}": (hours_ms / 3_600_000 * card[cls]).quantize(cent, ROUND_HALF_UP)
        for cls, hours_ms in usage.items()
    }
    for cls, total_mj in mj.items():
        out[f"energy {cls}"] = (Decimal(total_mj) / 3_600_000_000 * card["energy"]).quantize(cent, ROUND_HALF_UP)
    return out


@dataclass(frozen=True)
class Term:
    """A contract as the customer's own records have it: who signed for what, and when."""

    contract_id: str
    gpus: int
    start: float
    end: float


def _round(value: Fraction, places: int) -> Decimal:
    """Half away from zero, as a calculator does, worked out on exact fractions."""
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
            Decimal(1).scaleb(-places), ROUND_HALF_UP
        )


def recompute_invoice(
    records: list[dict[str, Any]],
    card: dict[str, Any],
    terms: list[Term],
    period: tuple[int, int],
    undelivered_ms: dict[str, int] | None = None,
    places: int = 2,
) -> dict[str, Decimal]:
    """A month's invoice lines, by key, from the usage export's rows (UsageRecord fields), the rate
    card as YAML data and the tenant's contracts, with the README's pricing rules:
    - GPU-time per allocation and month, rounded UP to billing_increment_s, then hours x the
      class's price for the model ("*" for any other); reserved usage is listed at 0;
    - a contract's commitment prorated by its seconds in the month; included GPU-hours are
      included_gpu_hours_per_month prorated the same way, else gpus x its hours in the month;
      reserved GPU-time beyond them is overage at overage_per_gpu_hour;
    - SLA credit: the contract's undelivered GPU-hours (`undelivered_ms`, by contract id) x
      sla_credit_per_gpu_hour, at most sla_credit_cap_pct % of the prorated commitment, negative;
    - energy per class: kWh x energy_per_kwh (no line at price 0);
    - every line rounded on its own, half away from zero, to the currency's minor unit.
    Keys: "usage CLASS MODEL[ CONTRACT]", "commitment ID", "overage ID", "sla_credit ID",
    "energy CLASS"."""
    start, end = period
    step = int(card.get("billing_increment_s", 1)) * 1000
    per_allocation: dict[tuple[str, str, str, str], int] = defaultdict(int)
    mj: dict[str, int] = defaultdict(int)
    for r in records:
        per_allocation[(r["allocation_id"], r["job_class"], r["gpu_model"], r["contract_id"])] += r["gpu_ms"]
        mj[r["job_class"]] += r["energy_mj"]
    billed: dict[tuple[str, str, str], int] = defaultdict(int)
    for (_, cls, model, cid), ms in per_allocation.items():
        billed[(cls, model, cid)] += -(-ms // step) * step
    out: dict[str, Decimal] = {}
    for (cls, model, cid), ms in billed.items():
        if cls == "reserved":
            out[f"usage {cls} {model} {cid}"] = _round(Fraction(0), places)
        else:
            prices = card["prices"][cls]
            price = Fraction(Decimal(prices.get(model, prices.get("*"))))
            out[f"usage {cls} {model}"] = _round(Fraction(ms, 3_600_000) * price, places)
    for t in terms:
        overlap = min(t.end, end) - max(t.start, start)
        if overlap <= 0:
            continue
        c = card["contracts"][t.contract_id]
        share = Fraction(overlap) / (end - start)
        commitment = Fraction(Decimal(c["commitment_per_month"])) * share
        out[f"commitment {t.contract_id}"] = _round(commitment, places)
        if short := (undelivered_ms or {}).get(t.contract_id, 0):
            credit = Fraction(short, 3_600_000) * Fraction(Decimal(c["sla_credit_per_gpu_hour"]))
            cap = commitment * Fraction(Decimal(str(c.get("sla_credit_cap_pct", 100)))) / 100
            out[f"sla_credit {t.contract_id}"] = _round(-min(credit, cap), places)
        if "included_gpu_hours_per_month" in c:
            included = Fraction(Decimal(str(c["included_gpu_hours_per_month"]))) * share * 3_600_000
        else:
            included = t.gpus * Fraction(overlap) * 1000
        used = sum(ms for (cls, _, cid), ms in billed.items() if cls == "reserved" and cid == t.contract_id)
        if used > included:
            hours = (used - included) / 3_600_000
            out[f"overage {t.contract_id}"] = _round(hours * Fraction(Decimal(c["overage_per_gpu_hour"])), places)
    for cls, total_mj in mj.items():
        price = Fraction(Decimal(card["energy_per_kwh"].get(cls, "0")))
        if total_mj > 0 and price > 0:
            out[f"energy {cls}"] = _round(Fraction(total_mj, 3_600_000_000) * price, places)
    return out


def invoice_lines(invoice: dict[str, Any]) -> dict[str, Decimal]:
    """An invoice's lines (`neocloud invoice --json`) under recompute_invoice's keys."""
    out: dict[str, Decimal] = {}
    for ln in invoice["lines"]:
        kind, cls, cid = ln["kind"], ln["job_class"], ln["contract_id"]
        if kind == "usage":
            key = f"usage {cls} {ln['gpu_model']}" + (f" {cid}" if cid else "")
        elif kind == "energy":
            key = f"energy {cls}"
        else:
            key = f"{kind} {cid}"
        assert key not in out, key
        out[key] = Decimal(ln["amount"])
    return out
