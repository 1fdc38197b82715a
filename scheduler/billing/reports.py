"""Usage reports from ledger rows: a tenant's usage grouped by job, day or model,
and the fleet split (internal vs tenants vs idle) that decides how much spare
capacity to sell. Pure: rows in, plain dicts out."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

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


def fleet_split(
    rows: Iterable[UsageRow], revenue: Mapping[str, Decimal], currency: str, unbilled: Mapping[str, str] = {}
) -> dict[str, Any]:
    """GPU-hours, their share and energy for internal work, tenants and idle GPUs; revenue per tenant;
    and the tenants that could not be rated (tenant -> why), whose usage is in the split all the same."""
    split: dict[str, list[float]] = {"internal": [0.0, 0.0], "tenants": [0.0, 0.0], "idle": [0.0, 0.0]}
    for r in rows:
        side = "idle" if r.job_class == IDLE_CLASS else "internal" if r.job_class == "internal" else "tenants"
        split[side][0] += r.gpu_ms / _MS_PER_HOUR
        split[side][1] += r.energy_mj / _MJ_PER_KWH
    total_h = sum(v[0] for v in split.values()) or 1.0
    return {
        "fleet": [
            {"side": side, "gpu_hours": round(h, 6), "share": round(h / total_h, 4), "energy_kwh": round(kwh, 6)}
            for side, (h, kwh) in split.items()
        ],
        "revenue": [{"tenant": t, "total": str(v), "currency": currency} for t, v in sorted(revenue.items())],
        "unbilled": [{"tenant": t, "error": why} for t, why in sorted(unbilled.items())],
    }


def _day(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour, dt.UTC).strftime("%Y-%m-%d")
