"""The demo's money: the example rate card, and the invoices and fleet split rated
from the scheduler's own ledger.

Prices and the demo contract's terms come from deploy/config/ratecard.example.yaml
alone (contracts.globex-demo; the scenario names the contract by that id), so
`neocloud invoice --rate-card deploy/config/ratecard.example.yaml` on the demo's
store gives the same invoices. Usage is in wall time: a 90-second demo bills
a 90-second share of an hourly price. The demo's contract runs on an hour past
the demo's end (so winding down never races it), and take-or-pay bills that
hour's share of the commitment too.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TextIO

from neocloud.scheduler.billing import (
    Books,
    Invoice,
    LineKind,
    RateCard,
    fleet_split,
    load_ratecard,
    parse_period,
    render_table,
)
from neocloud.scheduler.metering import IDLE_CLASS, UsageRow
from neocloud.scheduler.server import Scheduler
from neocloud.scheduler.store import open_db

logger = logging.getLogger(__name__)

EXAMPLE_RATECARD: Traversable = resources.files(__package__) / "ratecard.yaml"


def demo_ratecard(path: Traversable = EXAMPLE_RATECARD) -> RateCard:
    """The shipped example card: every price and the demo contract's terms."""
    return load_ratecard(path)


class DemoBooks:
    """Invoices for the demo's tenants, for the month the demo ran in."""

    def __init__(self, scheduler: Scheduler, card: RateCard, tenants: tuple[str, ...]) -> None:
        self._scheduler = scheduler
        self._books = Books(open_db(scheduler.config.db_path), card)
        self._tenants = ("internal", *tenants)
        self.period = dt.datetime.fromtimestamp(time.time(), dt.UTC).strftime("%Y-%m")

    def revenue(self) -> Decimal:
        """What tenants owe so far (the owner's internal cost left out), from the ledger as it stands."""
        return sum((self._books.invoice(t, self.period).total for t in self._tenants[1:]), Decimal(0))

    def close(self) -> None:
        """Bring the ledger up to the end: the last readings attributed, committed and metered."""
        metering = self._scheduler.metering
        fleet = self._scheduler.telemetry.fleet
        deadline = time.monotonic() + 15.0  # the allocation book is final a few seconds behind
        while fleet.attributor.pending_mj > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2 * self._scheduler.config.commit_interval_s)  # the attributed energy is committed
        if metering is not None:
            metering.run_once()

    def print_invoices(self, out: TextIO) -> None:
        p = parse_period(self.period)
        invoices = [self._books.invoice(t, self.period) for t in self._tenants]
        for inv in invoices:
            if inv.lines:
                out.write("\n" + render_table(inv))
        rows = self._books.rows(p.start, p.end)
        revenue = {inv.tenant: inv.total for inv in invoices if inv.tenant != "internal"}
        split = fleet_split(rows, revenue, self._books.card.currency)
        out.write("\nfleet split (GPU-hours, energy):\n")
        for side in split["fleet"]:
            out.write(
                f"  {side['side']:<9} {side['gpu_hours']:>9.4f} GPU-h  {side['share']:>6.1%}  "
                f"{side['energy_kwh']:>8.4f} kWh\n"
            )
        total = sum(revenue.values(), Decimal(0))
        out.write(f"revenue from tenants: {total} {self._books.card.currency}\n")
        out.write(_ledger_check(invoices, rows) + "\n")


def _ledger_check(invoices: list[Invoice], rows: Sequence[UsageRow]) -> str:
    """The invoices' usage GPU-hours against the ledger's rows: the same numbers, rated (each
    allocation rounded up to the billing increment at most once)."""
    invoiced = sum((ln.quantity for inv in invoices for ln in inv.lines if ln.kind is LineKind.USAGE), Decimal(0))
    used = [r for r in rows if r.job_class != IDLE_CLASS]
    ledger = Decimal(sum(r.gpu_ms for r in used)) / Decimal(3_600_000)
    allocations = len({r.allocation_id for r in used})
    same = Decimal(0) <= invoiced - ledger <= Decimal(allocations) / 3600 + Decimal("0.000001") * len(invoices)
    verdict = "match" if same else "DIFFER"
    return f"ledger check: invoiced usage {invoiced:.4f} GPU-h, ledger {ledger:.4f} GPU-h ({verdict})"
