"""The periodic billing pass, above both metering and billing (neither imports it):
every `interval_s`, on a thread and SQLite connection of its own, it meters closed
hours into the ledger, rates them, and keeps a summary for Prometheus (taken at the
pass, never at scrape time) with the reconciliation check: per metered hour, the
rows must add up to what was attributed (energy) and to the GPUs' wall time.

Each tenant is rated on its own: a tenant that cannot be rated is counted by
reason in every pass (neocloud_billing_errors_total) and logged once when it
starts failing, when its error changes and when it recovers, never every pass;
every other tenant is billed and exported as usual."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from neocloud.scheduler.billing.books import Books, TenantFailure
from neocloud.scheduler.billing.invoice import Reason
from neocloud.scheduler.billing.live import LiveRateCard
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.metering.ledger import Ledger
from neocloud.scheduler.metering.month import MonthToDate
from neocloud.scheduler.store import ratecards
from neocloud.scheduler.store.db import open_db

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    # (tenant, class) -> totals this UTC month so far; idle is tenant "" class "idle"
    gpu_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    energy_joules: dict[tuple[str, str], float] = field(default_factory=dict)
    gap: dict[str, float] = field(default_factory=dict)  # "energy" / "gpu_seconds" -> |rows - reference| / reference
    billed: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (tenant, class) -> this month so far
    currency: str = ""
    # (tenant, reason) -> ratings that failed since the scheduler started (a counter)
    billing_errors: dict[tuple[str, str], int] = field(default_factory=dict)


class BillingRunner:
    def __init__(
        self,
        db_path: str | Path,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        card: RateCard | None = None,
    ) -> None:
        self._db = open_db(db_path)
        self._clock = clock
        self.ledger = Ledger(self._db, clock)
        self.month = MonthToDate(self._db)  # the per-tenant figures, kept per metered hour
        # The card in force: the newest `admin ratecard apply`, else --rate-card (read each pass).
        self.cards = LiveRateCard(lambda: ratecards.latest(self._db), card)
        self.interval_s = interval_s
        self.summary = LedgerSummary()
        self._billing_errors: dict[tuple[str, str], int] = {}
        self._failing: dict[str, str] = {}  # tenant -> the error logged for it, until it is rated again
        self._stop = threading.Event()
        # One pass at a time on the one connection: the loop's and any caller's (demo, tests).
        self._pass = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="neocloud-ledger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._db.close()

    def _loop(self) -> None:
        self.run_once()  # at start: the ledger catches up with what came while the scheduler was down
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def run_once(self) -> None:
        """One pass and its summary; a failure is logged and counted, never fatal. A call
        while the loop's pass runs waits for it, then makes its own."""
        with self._pass:
            try:
                self.month.update(self.ledger.run_pass(), self._clock())
                self.summary = self._summarise()
            except Exception:
                self.ledger.stats.failures_total += 1
                logger.exception("ledger pass failed; the next one retries")

    def _summarise(self) -> LedgerSummary:
        db = self._db
        seconds, energy = self.month.totals()
        rows_ms, rows_mj = db.execute(
            "SELECT COALESCE(SUM(gpu_ms), 0), COALESCE(SUM(energy_mj), 0) FROM usage"
        ).fetchone()
        (wall_ms,) = db.execute("SELECT COALESCE(SUM(wall_gpu_ms), 0) FROM meter_hours").fetchone()
        # Energy against what ingest has attributed to the metered hours by now, read afresh: an hour
        # whose late energy never reaches its rows shows here until it is metered again.
        (counter_mj,) = db.execute(
            "SELECT COALESCE(SUM(energy_mj), 0) FROM meter_cells WHERE hour IN (SELECT hour FROM meter_hours)"
        ).fetchone()
        gap = {
            "gpu_seconds": abs(rows_ms - wall_ms) / wall_ms if wall_ms else 0.0,
            "energy": abs(rows_mj - counter_mj) / counter_mj if counter_mj else 0.0,
        }
        for quantity, ratio in gap.items():
            if ratio > 0.005:
                logger.error(
                    "ledger reconciliation: %s rows differ from the reference by %.2f%%", quantity, ratio * 100
                )
        card = self.cards.current()
        billed = self._billed(Books(db, card)) if card is not None else {}
        return LedgerSummary(seconds, energy, gap, billed, card.currency if card else "", dict(self._billing_errors))

    def _billed(self, books: Books) -> dict[tuple[str, str], Decimal]:
        """Each tenant's invoice for the current month as it stands, by class (commitments
        and credits under their line kind); tenants that cannot be rated are left out."""
        period = dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime("%Y-%m")
        rated = books.invoices(period)
        out: dict[tuple[str, str], Decimal] = {}
        for tenant, inv in rated.invoices.items():
            for line in inv.lines:
                key = (tenant, line.job_class or line.kind.value)
                out[key] = out.get(key, Decimal(0)) + line.amount
        self._record(period, rated.failures, rated.invoices.keys())
        return out

    def _record(self, period: str, failures: list[TenantFailure], rated: Iterable[str]) -> None:
        """Count each failure; log a tenant when it starts failing, fails otherwise, or recovers."""
        for f in failures:
            key = (f.tenant, f.reason.value)
            self._billing_errors[key] = self._billing_errors.get(key, 0) + 1
            if self._failing.get(f.tenant) != f.message:
                self._failing[f.tenant] = f.message
                logger.warning(
                    "billing %s: tenant %s cannot be rated (%s): %s; the other tenants are billed as usual",
                    period,
                    f.tenant,
                    f.reason.value,
                    f.message,
                    exc_info=f.error if f.reason is Reason.ERROR else None,  # a bug: its traceback, once
                )
        for tenant in rated:
            if self._failing.pop(tenant, None) is not None:
                logger.info("billing %s: tenant %s is rated again", period, tenant)
