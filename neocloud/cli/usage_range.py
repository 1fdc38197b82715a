"""`neocloud usage --since/--until`, sacct-style: a tenant's GPU-hours, kWh and utilised
GPU-hours between two times, by job, day or model, with a total and the cost so far,
read through the UsageService's month-based RPCs (GetUsage per month, GetInvoice for
the cost). Rows by job or model cover the whole months the range touches (the ledger
is read a month at a time); rows by day are cut to the range."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import grpc

from neocloud.cli.common import rfc3339
from neocloud.client import CALL_TIMEOUT_S, Client
from neocloud.v1 import usage_pb2 as pb

FIGURES = ("gpu_hours", "energy_kwh", "utilised_gpu_hours")
MAX_MONTHS = 120  # ten years of invoices in one command is a mistake, not a report


def month_start(t: float) -> float:
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    return dt.datetime(when.year, when.month, 1, tzinfo=dt.UTC).timestamp()


def months(since: float, until: float) -> list[str]:
    """The calendar months (UTC, "YYYY-MM") that [since, until) touches."""
    if until <= since:
        raise ValueError(f"--until ({rfc3339(until)}) must be after --since ({rfc3339(since)})")
    when = dt.datetime.fromtimestamp(month_start(since), dt.UTC)
    out: list[str] = []
    while when.timestamp() < until:
        out.append(f"{when.year:04d}-{when.month:02d}")
        if len(out) > MAX_MONTHS:
            raise ValueError(f"--since and --until span more than {MAX_MONTHS} months")
        when = dt.datetime(when.year + when.month // 12, when.month % 12 + 1, 1, tzinfo=dt.UTC)
    return out


def report(
    client: Client, tenant: str, by: str, grouping: pb.UsageGrouping, since: float, until: float
) -> dict[str, Any]:
    """The figures summed per key over the months, the total and the cost so far."""
    sums: dict[str, list[float]] = {}
    cost: Decimal | None = Decimal(0)
    currency = ""
    first_day, last_day = _day(since), _day(until - 1e-6)
    for period in months(since, until):
        request = pb.GetUsageRequest(tenant=tenant, period=period, group_by=grouping)
        for g in client.usage.GetUsage(request, metadata=client.metadata, timeout=CALL_TIMEOUT_S).groups:
            if by == "day" and not first_day <= g.key <= last_day:
                continue
            row = sums.setdefault(g.key, [0.0, 0.0, 0.0])
            for i, name in enumerate(FIGURES):
                row[i] += getattr(g, name)
        invoice = _invoice(client, tenant, period)
        if invoice is None or cost is None:
            cost = None  # no rate card on the scheduler: usage is read, nothing is priced
        else:
            cost += Decimal(invoice["total"])
            currency = invoice["currency"]
    rows = [{by: key, **_figures(v)} for key, v in sorted(sums.items())]
    total = [sum(v[i] for v in sums.values()) for i in range(len(FIGURES))]
    return {
        "since": rfc3339(since),
        "until": rfc3339(until),
        by: rows,
        "total": _figures(total),
        "cost_so_far": None if cost is None else {"amount": str(cost), "currency": currency},
    }


def _figures(values: list[float]) -> dict[str, float]:
    return {name: round(v, 6) for name, v in zip(FIGURES, values, strict=True)}


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


def _invoice(client: Client, tenant: str, period: str) -> dict[str, Any] | None:
    request = pb.GetInvoiceRequest(tenant=tenant, period=period)
    try:
        reply = client.usage.GetInvoice(request, metadata=client.metadata, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.FAILED_PRECONDITION:  # the scheduler has no rate card
            return None
        raise
    doc: dict[str, Any] = json.loads(reply.invoice_json)
    return doc
