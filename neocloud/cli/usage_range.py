"""`neocloud usage --since/--until`, sacct-style: a tenant's GPU-hours, kWh and utilised
GPU-hours between two times, by job, day or model, with a total, each job's cost and
the cost so far, read through the UsageService a month at a time (GetUsage with since
and until inside each month the range touches, GetInvoice for the cost so far). Hours
count when they start in the range."""

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
    """The figures (and by job the costs) summed per key over the months, the total and the cost so far."""
    sums: dict[str, list[float]] = {}
    costs: dict[str, Decimal] = {}
    priced: list[pb.GetUsageResponse] = []
    unpriced = ""
    cost: Decimal | None = Decimal(0)
    currency = ""
    for period, start, end in chunks(since, until):
        request = pb.GetUsageRequest(tenant=tenant, group_by=grouping, since=start, until=end)
        reply = client.usage.GetUsage(request, metadata=client.metadata, timeout=CALL_TIMEOUT_S)
        for g in reply.groups:
            row = sums.setdefault(g.key, [0.0, 0.0, 0.0])
            for i, name in enumerate(FIGURES):
                row[i] += getattr(g, name)
            if g.cost:
                costs[g.key] = costs.get(g.key, Decimal(0)) + Decimal(g.cost)
        if reply.unpriced:
            unpriced = unpriced or f"{period}: {reply.unpriced}"
        elif reply.groups:
            priced.append(reply)
        invoice = _invoice(client, tenant, period)
        if invoice is None or cost is None:
            cost = None  # no rate card on the scheduler: usage is read, nothing is priced
        else:
            cost += Decimal(invoice["total"])
            currency = invoice["currency"]
    job = by == "job"
    prices = _pricing(priced, unpriced) if job else {}
    shown = job and not prices.get("unpriced")
    rows = [
        {by: key, **_figures(v)} | ({"cost": _cost(costs, key, shown)} if job else {})
        for key, v in sorted(sums.items())
    ]
    total = [sum(v[i] for v in sums.values()) for i in range(len(FIGURES))]
    return {
        "since": rfc3339(since),
        "until": rfc3339(until),
        by: rows,
        "total": _figures(total) | ({"cost": str(sum(costs.values(), Decimal(0))) if shown else None} if job else {}),
        **prices,
        "cost_so_far": None if cost is None else {"amount": str(cost), "currency": currency},
    }


def chunks(since: float, until: float) -> list[tuple[str, float, float]]:
    """[since, until) cut at month boundaries: (month, start, end) for each month it touches."""
    out = []
    for period in months(since, until):
        year, month = (int(x) for x in period.split("-"))
        start = dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()
        end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC).timestamp()
        out.append((period, max(since, start), min(until, end)))
    return out


def pricing(reply: pb.GetUsageResponse) -> dict[str, Any]:
    """What priced a GetUsage reply's costs: currency and rate card, or why nothing is priced."""
    return _pricing([reply] if not reply.unpriced else [], reply.unpriced)


def _pricing(priced: list[pb.GetUsageResponse], unpriced: str) -> dict[str, Any]:
    currencies = sorted({r.currency for r in priced})
    if len(currencies) > 1:
        unpriced = unpriced or f"the rate card's currency changed in the range ({', '.join(currencies)})"
    return {
        "currency": None if unpriced or not currencies else currencies[0],
        "rate_versions": sorted({r.rate_version for r in priced}),
        "unpriced": unpriced or None,
    }


def cost_note(report: dict[str, Any]) -> str:
    """One line under a by-job table: what the cost column is, in which currency, or why it is empty."""
    if report.get("unpriced"):
        return f"cost: not priced ({report['unpriced']})"
    versions = ", ".join(report["rate_versions"]) or "-"
    return (
        f"cost: GPU-time usage in {report['currency'] or '-'} (rate card {versions}); "
        "commitments, overage, energy and SLA credits are on the invoice, not on jobs"
    )


def _cost(costs: dict[str, Decimal], key: str, shown: bool) -> str | None:
    return str(costs.get(key, Decimal(0))) if shown else None


def _figures(values: list[float]) -> dict[str, float]:
    return {name: round(v, 6) for name, v in zip(FIGURES, values, strict=True)}


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
