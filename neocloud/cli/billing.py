"""`neocloud invoice` and `neocloud usage`: invoices and usage from the ledger.

Through the scheduler's UsageService with an API token (a tenant reads its own),
or, on the scheduler host, straight from its store with `--db` (operators: the
fleet split, issuing a closed month). The usage export (`--export`, `--cloudevents
SITE`) prints the same lines either way (cloudevents.write_usage_events)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from neocloud.cli import usage_range
from neocloud.cli.common import EXIT_USAGE, UsageError, command, connection_options, parse_time
from neocloud.client import Client
from neocloud.domain.errors import NeocloudError
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.cloudevents import write_usage_events
from neocloud.scheduler.billing.export import from_record
from neocloud.scheduler.billing.invoice import parse_period
from neocloud.scheduler.billing.ratecard import load_ratecard
from neocloud.scheduler.billing.render import invoice_from_json, render_csv, render_json, render_table
from neocloud.scheduler.billing.reports import GROUPINGS, fleet_split, tenant_usage
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.store.db import StoreError, open_db
from neocloud.v1 import usage_pb2 as pb

GROUPING = {"job": pb.USAGE_GROUPING_JOB, "day": pb.USAGE_GROUPING_DAY, "model": pb.USAGE_GROUPING_MODEL}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    conn = connection_options()
    inv = subparsers.add_parser(
        "invoice",
        parents=[conn],
        help="a tenant's invoice for a month, rated from the ledger",
        description="A tenant's invoice for a calendar month (UTC): commitments, usage by class and GPU model, "
        "overage, energy, SLA credits and adjustments to earlier issued months. An issued invoice is shown as it "
        "was issued. Through the API a tenant token reads its own (--tenant for operators); with --db, on the "
        "scheduler host, --issue closes an ended month for good.",
    )
    inv.add_argument("--tenant", default="", help="tenant (operators; a tenant token reads its own)")
    inv.add_argument("--period", required=True, help="calendar month, YYYY-MM (UTC)")
    inv.add_argument("--csv", action="store_true", help="print CSV, one row per line")
    _local_args(inv)
    inv.add_argument("--issue", action="store_true", help="with --db: issue the invoice (the month must have ended)")
    inv.set_defaults(func=_invoice)

    use = subparsers.add_parser(
        "usage",
        parents=[conn],
        help="usage from the ledger: by job, day or model; the fleet split; CloudEvents export",
        description="A tenant's usage, summed --by job, day or model (GPU-hours, energy, utilised GPU-hours): "
        "for a calendar month (--period, UTC), or sacct-style between --since and --until (default: this month "
        "so far) with a total and the cost so far (the invoices of the months covered, to date). Hours count "
        "when they start in the range. By job, each job's cost: its share of the invoice's GPU-time usage lines "
        "(not commitments, overage, energy or credits). --export prints the month's usage rows, the ones the "
        "invoice is rated from, one JSON object per line; --cloudevents SITE prints them as CloudEvents "
        "(OpenMeter ingests them). With --db on the scheduler host and no --tenant: the fleet split (internal, "
        "tenants and idle GPU-hours and energy, and revenue), or every tenant's rows with --export.",
    )
    use.add_argument("--period", help="calendar month, YYYY-MM (UTC)")
    use.add_argument("--since", type=parse_time, help="'now', Unix seconds or ISO 8601 (default: this month's start)")
    use.add_argument("--until", type=parse_time, help="'now', Unix seconds or ISO 8601 (default: now)")
    use.add_argument("--tenant", default="", help="tenant (operators; a tenant token reads its own)")
    use.add_argument("--by", choices=GROUPINGS, default="job", help="grouping (default: %(default)s)")
    _local_args(use)
    use.add_argument("--export", action="store_true", help="the month's usage rows, one JSON object per line")
    use.add_argument("--cloudevents", metavar="SITE", help="export as CloudEvents JSON lines, source neocloud/SITE")
    use.set_defaults(func=_usage)


def _local_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("on the scheduler host")
    g.add_argument("--db", help="read the scheduler's store directly (e.g. /var/lib/neocloud/scheduler.db)")
    g.add_argument("--rate-card", help="with --db: the rate card YAML to rate with")


def _refuse(name: str, why: str) -> int:
    print(f"neocloud {name}: {why}", file=sys.stderr)
    return EXIT_USAGE


def _local(name: str, run: Callable[[Books], str]) -> Callable[[argparse.Namespace], int]:
    def main(args: argparse.Namespace) -> int:
        try:
            if not Path(args.db).exists():
                raise StoreError(f"no store at {args.db}: give the scheduler's --db path")
            out = run(Books(open_db(args.db), load_ratecard(args.rate_card) if args.rate_card else None))
        except (NeocloudError, StoreError, ValueError) as e:
            return _refuse(name, str(e))
        print(out, end="" if out.endswith("\n") else "\n")
        return 0

    return main


def _invoice(args: argparse.Namespace) -> int:
    render = render_json if args.json else render_csv if args.csv else render_table
    if args.db:

        def local(books: Books) -> str:
            if not args.tenant:
                raise ValueError("--tenant is needed with --db")
            issue = books.issue if args.issue else books.invoice
            return render(issue(args.tenant, args.period))

        return _local("invoice", local)(args)
    if args.issue:
        return _refuse("invoice", "--issue needs --db, on the scheduler host")

    @command
    def remote(args: argparse.Namespace, client: Client) -> None:
        reply = client.usage.GetInvoice(
            pb.GetInvoiceRequest(tenant=args.tenant, period=args.period), metadata=client.metadata
        )
        print(render(invoice_from_json(reply.invoice_json)), end="")

    return remote(args)


def _usage(args: argparse.Namespace) -> int:
    export = args.export or args.cloudevents is not None
    if args.period and (args.since is not None or args.until is not None):
        return _refuse("usage", "give --period or --since/--until, not both")
    if (args.db or export) and not args.period:
        return _refuse("usage", "--db and --export need --period")
    if args.db:

        def local(books: Books) -> str:
            p = parse_period(args.period)
            rows = books.rows(p.start, p.end, args.tenant or None)
            if export:
                lines = io.StringIO()
                write_usage_events(rows, lines, args.cloudevents)
                return lines.getvalue()
            if args.tenant:
                return _show({args.by: tenant_usage(rows, args.by)}, args.json)
            rated = books.invoices(args.period)  # a tenant that cannot be rated is listed, not fatal
            revenue = {t: inv.total for t, inv in rated.invoices.items()}
            unbilled = {f.tenant: f"{f.reason.value}: {f.message}" for f in rated.failures}
            return _show(fleet_split(rows, revenue, books.card.currency, unbilled), args.json)

        return _local("usage", local)(args)
    if export:
        return command(_export)(args)
    if not args.period:
        return command(_usage_range)(args)

    @command
    def remote(args: argparse.Namespace, client: Client) -> None:
        request = pb.GetUsageRequest(tenant=args.tenant, period=args.period, group_by=GROUPING[args.by])
        reply = client.usage.GetUsage(request, metadata=client.metadata)
        groups = [
            {args.by: g.key, "gpu_hours": round(g.gpu_hours, 6), "energy_kwh": round(g.energy_kwh, 6),
             "utilised_gpu_hours": round(g.utilised_gpu_hours, 6)}
            | ({"cost": g.cost or None} if args.by == "job" else {})
            for g in reply.groups
        ]  # fmt: skip
        report: dict[str, Any] = {args.by: groups}
        if args.by == "job":
            report |= usage_range.pricing(reply)
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(_show({args.by: groups}, False))
        if args.by == "job":
            print(usage_range.cost_note(report))

    return remote(args)


def _export(args: argparse.Namespace, client: Client) -> None:
    """The month's rows through ExportUsage, printed as the operator's --db export prints them."""
    request = pb.ExportUsageRequest(tenant=args.tenant, period=args.period)
    pages = client.usage.ExportUsage(request, metadata=client.metadata)
    written = write_usage_events(_rows(pages, sys.stderr), sys.stdout, args.cloudevents)
    print(f"{written} usage row(s) of {args.period}", file=sys.stderr)


def _rows(pages: Iterator[pb.UsagePage], note: TextIO) -> Iterator[UsageRow]:
    """The rows of each page as it arrives; the rate card in force (first page) goes to `note`."""
    for i, page in enumerate(pages):
        if i == 0:
            card = f"{page.rate_version} ({page.currency})" if page.rate_version else "none on the scheduler"
            print(f"rate card in force: {card}", file=note)
        yield from (from_record(r) for r in page.records)


def _usage_range(args: argparse.Namespace, client: Client) -> None:
    until = args.until if args.until is not None else parse_time("now")
    since = args.since if args.since is not None else usage_range.month_start(until)
    try:
        report = usage_range.report(client, args.tenant, args.by, GROUPING[args.by], since, until)
    except ValueError as e:
        raise UsageError(str(e)) from e
    if args.json:
        print(json.dumps(report, indent=2))
        return
    cost = report["cost_so_far"]
    print(f"usage from {report['since']} until {report['until']}")
    print(_show({args.by: report[args.by], "total": [report["total"]]}, False))
    if args.by == "job":
        print(usage_range.cost_note(report))
    print("cost so far: " + (f"{cost['amount']} {cost['currency']}" if cost else "- (the scheduler has no rate card)"))


def _show(report: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(report, indent=2, default=str)
    out = []
    for section, items in report.items():
        if not items:
            out.append(f"{section}: none")
            continue
        cols = list(items[0])
        cells = [["-" if item[c] is None else str(item[c]) for c in cols] for item in items]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        out.append(f"{section}:")
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        out += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
