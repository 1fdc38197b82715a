"""The demo's money: the example rate card, the scenario's contract terms, and the
invoices and fleet split rated from the scheduler's own ledger.

Prices come from deploy/config/ratecard.example.yaml; a contract's take-or-pay
commitment from the scenario (the demo's contract ids are made at run time, so
the terms are keyed to them here). Usage is in wall time: a 90-second demo bills
a 90-second share of an hourly price. The demo's contract runs on an hour past
the demo's end (so winding down never races it), and take-or-pay bills that
hour's share of the commitment too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TextIO

from neocloud.scheduler.billing import (
    Books,
    ContractTerms,
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
NOMINAL_GPU_W = Decimal(700)  # what the policy budgets a GPU at: a power contract's included GPU-hours
SLA_CREDIT_CAP_PCT = Decimal(10)


def demo_ratecard(commitments: Mapping[str, tuple[Decimal, bool]], path: Traversable = EXAMPLE_RATECARD) -> RateCard:
    """The example card with terms for the demo's contracts: contract id -> (commitment per
    month, power-denominated). Overage at the list price, SLA credits at list too."""
    card = load_ratecard(path)
    list_price = card.gpu_hour_price("on_demand", "NVIDIA H200") or Decimal("3.50")
    terms = {
        cid: ContractTerms(
            contract_id=cid,
            commitment_per_month=commitment,
            overage_per_gpu_hour=list_price,
            sla_credit_per_gpu_hour=list_price,
            sla_credit_cap_pct=SLA_CREDIT_CAP_PCT,
            nominal_gpu_w=NOMINAL_GPU_W if by_power else None,
            where=f"the demo scenario's contract {cid}",
        )
        for cid, (commitment, by_power) in commitments.items()
    }
    return dataclasses.replace(card, contracts={**card.contracts, **terms})


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
