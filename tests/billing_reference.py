"""A customer's own check of its invoice, shared by the tests that recompute one: the README's
pricing rules applied to the usage export with nothing of neocloud's rating."""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal


def recompute_from_export(events: list[dict], card: dict[str, Decimal], increment_s: int) -> dict[str, Decimal]:  # type: ignore[type-arg]
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
