"""Usage reports from ledger rows: a tenant's usage grouped by job, day or model,
each job's cost (its share of the invoice's GPU-time usage lines), and the fleet
split (internal vs tenants vs idle) that decides how much spare capacity to sell.
Pure: rows in, plain dicts out."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

from neocloud.scheduler.billing.currency import minor_units
from neocloud.scheduler.billing.invoice import MS_PER_HOUR, Invoice, LineKind, exact
from neocloud.scheduler.billing.ratecard import RESERVED
from neocloud.scheduler.billing.rating import billed_ms
from neocloud.scheduler.metering.usage import IDLE_CLASS, UsageRow

GROUPINGS = ("job", "day", "model")
_MS_PER_HOUR = 3.6e6
_MJ_PER_KWH = 3.6e9


def tenant_usage(rows: Iterable[UsageRow], by: str) -> list[dict[str, Any]]:
    """GPU-hours, energy and utilised GPU-hours per job, UTC day or GPU model."""
    if by not in GROUPINGS:
        raise ValueError(f"group usage by one of {', '.join(GROUPINGS)}, not {by!r}")
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        key = r.job_id if by == "job" else r.gpu_model if by == "model" else _day(r.hour)
        g = groups[key]
        g[0] += r.gpu_ms / _MS_PER_HOUR
        g[1] += r.energy_mj / _MJ_PER_KWH
        g[2] += r.util_gpu_ms / _MS_PER_HOUR
    return [
        {by: k, "gpu_hours": round(v[0], 6), "energy_kwh": round(v[1], 6), "utilised_gpu_hours": round(v[2], 6)}
        for k, v in sorted(groups.items())
    ]


def job_costs(invoice: Invoice, allocations: Iterable[UsageRow], increment_s: int) -> dict[str, Decimal]:
    """Each job's share of `invoice`'s GPU-time usage lines, which were rated from `allocations`
    (a row per allocation, class, model and contract: Books.allocation_totals).

    A job's GPU-ms are billed as the invoice bills them (rounded up per allocation), priced
    at the line's unit price; each line's amount is then split over its jobs in the currency's
    minor units, largest remainder first (ties by job id), so the jobs' costs add up to the
    usage lines to the cent. Reserved usage is 0 (the commitment pays for it); commitments,
    overage, energy, SLA credits and adjustments are no job's. Every job of `allocations` is
    in the result."""
    lines = {(ln.job_class, ln.gpu_model): ln for ln in invoice.lines if ln.kind is LineKind.USAGE}
    scale = 10 ** minor_units(invoice.currency)
    shares: dict[tuple[str, str], dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    costs: dict[str, int] = {}  # job -> minor units
    for a in allocations:
        costs.setdefault(a.job_id, 0)
        if a.job_class != RESERVED and a.job_class != IDLE_CLASS:
            shares[(a.job_class, a.gpu_model)][a.job_id] += Fraction(billed_ms(a.gpu_ms, increment_s), MS_PER_HOUR)
    for key, hours in shares.items():
        line = lines.get(key)
        if line is None:  # nothing billed for it (0 GPU-ms)
            continue
        exact_units = {job: h * exact(line.unit_price) * scale for job, h in hours.items()}
        units = {job: int(v) for job, v in exact_units.items()}  # floor: amounts are >= 0
        left = int(line.amount * scale) - sum(units.values())
        if not 0 <= left <= len(units):
            raise ValueError(f"usage line {line.description!r} was not rated from these allocations")
        for job in sorted(units, key=lambda j: (units[j] - exact_units[j], j))[:left]:
            units[job] += 1
        for job, n in units.items():
            costs[job] += n
    return {job: Decimal(n).scaleb(-minor_units(invoice.currency)) for job, n in costs.items()}


def fleet_split(
    rows: Iterable[UsageRow], revenue: Mapping[str, Decimal], currency: str, unbilled: Mapping[str, str] = {}
) -> dict[str, Any]:
    """GPU-hours, their share and energy for internal work, tenants and idle GPUs; revenue per tenant;
    and the tenants that could not be rated (tenant -> why), whose usage is in the split all the same."""
    split: dict[str, list[float]] = {"internal": [0.0, 0.0], "tenants": [0.0, 0.0], "idle": [0.0, 0.0]}
    teams: dict[str, list[float]] = {}  # internal work by team (tenant "internal" and the internal teams)
    for r in rows:
        side = "idle" if r.job_class == IDLE_CLASS else "internal" if r.job_class == "internal" else "tenants"
        split[side][0] += r.gpu_ms / _MS_PER_HOUR
        split[side][1] += r.energy_mj / _MJ_PER_KWH
        if side == "internal":
            team = teams.setdefault(r.tenant, [0.0, 0.0])
            team[0] += r.gpu_ms / _MS_PER_HOUR
            team[1] += r.energy_mj / _MJ_PER_KWH
    total_h = sum(v[0] for v in split.values()) or 1.0
    return {
        "fleet": [
            {"side": side, "gpu_hours": round(h, 6), "share": round(h / total_h, 4), "energy_kwh": round(kwh, 6)}
            for side, (h, kwh) in split.items()
        ],
        "internal_by_team": [
            {"team": t, "gpu_hours": round(h, 6), "share": round(h / total_h, 4), "energy_kwh": round(kwh, 6)}
            for t, (h, kwh) in sorted(teams.items())
        ],
        "revenue": [{"tenant": t, "total": str(v), "currency": currency} for t, v in sorted(revenue.items())],
        "unbilled": [{"tenant": t, "error": why} for t, why in sorted(unbilled.items())],
    }


def _day(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour, dt.UTC).strftime("%Y-%m-%d")
