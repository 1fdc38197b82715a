"""`neocloud invoice` and `neocloud usage`: the ledger and invoices, read from the
scheduler's store on the scheduler host (operators)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from neocloud.errors import NeocloudError
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.cloudevents import write_usage_events
from neocloud.scheduler.billing.invoice import parse_period
from neocloud.scheduler.billing.ratecard import load_ratecard
from neocloud.scheduler.billing.render import render_csv, render_json, render_table
from neocloud.scheduler.metering.usage import IDLE_CLASS, UsageRow
from neocloud.scheduler.store.db import StoreError, open_db

DEFAULT_DB = "/var/lib/neocloud/scheduler.db"
DEFAULT_RATECARD = "/etc/neocloud/ratecard.yaml"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    inv = subparsers.add_parser(
        "invoice",
        help="a tenant's invoice for a month, rated from the ledger",
        description="Rate a tenant's usage for a calendar month (UTC) with the rate card: commitments, usage by "
        "class and GPU model, overage, energy, SLA credits and adjustments to earlier issued months. An issued "
        "invoice is shown as it was issued; --issue closes an ended month for good.",
    )
    _store_args(inv)
    inv.add_argument("--tenant", required=True, help="tenant name ('internal' for the owner's internal work)")
    inv.add_argument("--period", required=True, help="calendar month, YYYY-MM (UTC)")
    fmt = inv.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (amounts as decimal strings)")
    fmt.add_argument("--csv", action="store_true", help="print CSV, one row per line")
    inv.add_argument("--issue", action="store_true", help="issue the invoice (the month must have ended)")
    inv.set_defaults(func=_invoice)

    use = subparsers.add_parser(
        "usage",
        help="usage from the ledger: a tenant's by job, day or model; the fleet split; CloudEvents export",
        description="Without --tenant: the fleet split for the period (internal, tenant and idle GPU-hours and "
        "energy, and revenue rated with the rate card). With --tenant: that tenant's usage grouped --by job, day "
        "or model. --cloudevents prints one CloudEvents JSON object per usage row (OpenMeter ingests them).",
    )
    _store_args(use)
    use.add_argument("--period", required=True, help="calendar month, YYYY-MM (UTC)")
    use.add_argument("--tenant", help="one tenant's usage")
    use.add_argument("--by", choices=("job", "day", "model"), default="job", help="grouping (default: %(default)s)")
    use.add_argument("--json", action="store_true", help="print JSON")
    use.add_argument("--cloudevents", metavar="SITE", help="print CloudEvents JSON lines with source neocloud/SITE")
    use.set_defaults(func=_usage)


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help="the scheduler's store (default: %(default)s)")
    p.add_argument("--rate-card", default=DEFAULT_RATECARD, help="rate card YAML (default: %(default)s)")


def _books(args: argparse.Namespace) -> Books:
    if args.db != ":memory:" and not Path(args.db).exists():
        raise StoreError(f"no store at {args.db}: give the scheduler's --db path")
    return Books(open_db(args.db), load_ratecard(args.rate_card))


def _invoice(args: argparse.Namespace) -> int:
    try:
        books = _books(args)
        inv = books.issue(args.tenant, args.period) if args.issue else books.invoice(args.tenant, args.period)
    except (NeocloudError, StoreError) as e:
        print(f"neocloud invoice: {e}", file=sys.stderr)
        return 2
    print(render_json(inv) if args.json else render_csv(inv) if args.csv else render_table(inv), end="")
    return 0


def _usage(args: argparse.Namespace) -> int:
    try:
        books = _books(args)
        p = parse_period(args.period)
        rows = books.rows(p.start, p.end, args.tenant)
        if args.cloudevents:
            write_usage_events(rows, sys.stdout, args.cloudevents)
            return 0
        if args.tenant:
            report = tenant_usage(rows, args.by)
        else:
            revenue = {t: books.invoice(t, args.period).total for t in books.tenants(p.start, p.end)}
            report = fleet_split(rows, revenue, books.card.currency)
    except (NeocloudError, StoreError) as e:
        print(f"neocloud usage: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str) if args.json else _table(report))
    return 0


def tenant_usage(rows: Iterable[UsageRow], by: str) -> dict[str, Any]:
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for r in rows:
        key = {"job": r.job_id, "model": r.gpu_model}.get(by) or _day(r.hour)
        g = groups[key]
        g[0] += r.gpu_ms / 3.6e6
        g[1] += r.energy_mj / 3.6e9
        g[2] += r.util_gpu_ms / 3.6e6
    return {
        by: [
            {by: k, "gpu_hours": round(v[0], 6), "energy_kwh": round(v[1], 6), "utilised_gpu_hours": round(v[2], 6)}
            for k, v in sorted(groups.items())
        ]
    }


def fleet_split(rows: Iterable[UsageRow], revenue: dict[str, Decimal], currency: str) -> dict[str, Any]:
    """Internal vs tenants vs idle: the numbers that decide how much capacity to sell."""
    split: dict[str, list[float]] = {"internal": [0.0, 0.0], "tenants": [0.0, 0.0], "idle": [0.0, 0.0]}
    for r in rows:
        side = "idle" if r.job_class == IDLE_CLASS else "internal" if r.job_class == "internal" else "tenants"
        split[side][0] += r.gpu_ms / 3.6e6
        split[side][1] += r.energy_mj / 3.6e9
    total_h = sum(v[0] for v in split.values()) or 1.0
    return {
        "fleet": [
            {"side": side, "gpu_hours": round(h, 6), "share": round(h / total_h, 4), "energy_kwh": round(kwh, 6)}
            for side, (h, kwh) in split.items()
        ],
        "revenue": [{"tenant": t, "total": str(v), "currency": currency} for t, v in sorted(revenue.items())],
    }


def _day(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour, dt.UTC).strftime("%Y-%m-%d")


def _table(report: dict[str, Any]) -> str:
    out = []
    for section, items in report.items():
        if not items:
            continue
        cols = list(items[0])
        cells = [[str(item[c]) for c in cols] for item in items]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        out.append(f"{section}:")
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        out += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
