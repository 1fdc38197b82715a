"""The billing side of the store: usage rows, contracts and shortfalls read from
the ledger, invoices rated from them, issued invoices kept as they were sent.

An issued invoice is never changed: asking for it again returns it as issued.
When the ledger of an issued period changes later (late telemetry), the
difference becomes adjustment lines on the tenant's next open invoice.

Every tenant is rated on its own (`invoices`): one tenant's broken data or
missing terms fails that tenant's invoice only, and is reported with a reason.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from neocloud.domain.errors import FailedPreconditionError, NeocloudError
from neocloud.scheduler.billing.adjustments import adjustment_lines
from neocloud.scheduler.billing.invoice import BillingError, Invoice, Line, LineKind, Reason, parse_period
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.billing.rating import invoice as rate_invoice
from neocloud.scheduler.billing.render import invoice_from_json, render_json
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.store.records import ContractRecord, ContractShortfall

logger = logging.getLogger(__name__)

_USAGE_COLUMNS = (
    "usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id, hour, gpu_ms, energy_mj,"
    " util_gpu_ms, peak_power_mw, memory_peak_bytes"
)


@dataclass(frozen=True, slots=True)
class TenantFailure:
    """A tenant whose invoice could not be rated, and why (`error` is the exception, for the log)."""

    tenant: str
    reason: Reason
    message: str
    error: Exception


@dataclass(frozen=True, slots=True)
class Rated:
    """A period rated tenant by tenant: the invoices that could be, and the tenants that could not."""

    invoices: dict[str, Invoice]
    failures: list[TenantFailure]


class Books:
    def __init__(self, db: sqlite3.Connection, card: RateCard | None) -> None:
        """`card` None: usage can be read, nothing can be rated."""
        self._db = db
        self._card = card

    @property
    def card(self) -> RateCard:
        if self._card is None:
            raise FailedPreconditionError("no rate card: start the scheduler with --rate-card FILE to rate usage")
        return self._card

    # --- reads -------------------------------------------------------------------

    def rows(self, start: float, end: float, tenant: str | None = None) -> list[UsageRow]:
        """Usage rows of the hours in [start, end), of one tenant or all (idle included)."""
        where = "hour >= ? AND hour < ?"
        params: list[object] = [start, end]
        if tenant is not None:
            where += " AND tenant = ?"
            params.append(tenant)
        query = f"SELECT {_USAGE_COLUMNS} FROM usage WHERE {where} ORDER BY hour"
        return [UsageRow(*row) for row in self._db.execute(query, params)]

    def allocation_totals(self, start: float, end: float, tenant: str) -> list[UsageRow]:
        """The tenant's rows in [start, end) summed per allocation, model and class by
        SQLite: what rating needs (it sums an allocation's hours before rounding to
        the billing increment), without a Python object per hour."""
        query = (
            "SELECT allocation_id || '/' || ? || '/' || gpu_model, tenant, job_id, allocation_id, gpu_model, job_class,"
            " contract_id, MIN(hour), SUM(gpu_ms), SUM(energy_mj), SUM(util_gpu_ms), MAX(peak_power_mw),"
            " MAX(memory_peak_bytes) FROM usage WHERE tenant = ? AND hour >= ? AND hour < ?"
            " GROUP BY allocation_id, gpu_model, job_class, contract_id, job_id, tenant"
        )
        return [UsageRow(*row) for row in self._db.execute(query, (f"{start:.0f}-{end:.0f}", tenant, start, end))]

    def tenants(self, start: float, end: float) -> list[str]:
        """Tenants with usage in [start, end) or a contract overlapping it."""
        rows = self._db.execute(
            "SELECT tenant FROM usage WHERE hour >= ? AND hour < ? AND tenant != ''"
            " UNION SELECT tenant FROM contracts WHERE start < ? AND end > ? ORDER BY 1",
            (start, end, end, start),
        )
        return [str(r[0]) for r in rows]

    def contracts(self, tenant: str) -> list[ContractRecord]:
        rows = self._db.execute(
            "SELECT contract_id, tenant, start, end, gpus, power_w, gpu_model, created_at FROM contracts"
            " WHERE tenant = ? ORDER BY contract_id",
            (tenant,),
        )
        return [ContractRecord(*row) for row in rows]

    def shortfalls(self, tenant: str, start: float, end: float) -> list[ContractShortfall]:
        rows = self._db.execute(
            "SELECT contract_id, tenant, hour, undelivered_gpu_ms FROM contract_shortfalls"
            " WHERE tenant = ? AND hour >= ? AND hour < ? ORDER BY contract_id, hour",
            (tenant, start, end),
        )
        return [ContractShortfall(*row) for row in rows]

    def issued(self, tenant: str, period: str) -> Invoice | None:
        row = self._db.execute("SELECT body FROM invoices WHERE tenant = ? AND period = ?", (tenant, period)).fetchone()
        return invoice_from_json(row[0]) if row else None

    # --- rating ------------------------------------------------------------------

    def rate(self, tenant: str, period: str, adjustments: Sequence[Line] = ()) -> Invoice:
        """The period rated from the ledger as it is now."""
        p = parse_period(period)
        return rate_invoice(
            tenant,
            period,
            self.allocation_totals(p.start, p.end, tenant),
            self.contracts(tenant),
            self.shortfalls(tenant, p.start, p.end),
            self.card,
            adjustments=adjustments,
        )

    def invoice(self, tenant: str, period: str) -> Invoice:
        """The issued invoice if there is one, else the period rated now with the
        corrections to earlier issued periods."""
        return self.issued(tenant, period) or self.rate(tenant, period, self.adjustments(tenant, period))

    def invoices(self, period: str) -> Rated:
        """Every tenant's invoice for the period (`invoice`), each rated on its own: a tenant
        that fails is listed with its reason, and the others are rated as if it were not there."""
        p = parse_period(period)
        currency = self.card.currency  # no card is everyone's problem, not a tenant's: raised here
        rated = Rated({}, [])
        for tenant in self.tenants(p.start, p.end):
            try:
                rated.invoices[tenant] = self.invoice(tenant, period)
            except BillingError as e:
                rated.failures.append(TenantFailure(tenant, e.reason, str(e), e))
            except NeocloudError as e:  # e.g. an issued invoice that no longer reads
                rated.failures.append(TenantFailure(tenant, Reason.INVALID, str(e), e))
            except Exception as e:  # noqa: BLE001 - a bug met on one tenant's data must not stop the others
                rated.failures.append(TenantFailure(tenant, Reason.ERROR, f"{type(e).__name__}: {e}", e))
        logger.debug(
            "rated %s in %s: %d invoice(s), %d failed", period, currency, len(rated.invoices), len(rated.failures)
        )
        return rated

    def adjustments(self, tenant: str, period: str) -> list[Line]:
        """For each issued period before `period`: what changed since it was issued and
        was not already carried by a later issued invoice."""
        issued = [
            (str(p), invoice_from_json(body))
            for p, body in self._db.execute(
                "SELECT period, body FROM invoices WHERE tenant = ? AND period < ? ORDER BY period", (tenant, period)
            )
        ]
        out: list[Line] = []
        for i, (closed, inv) in enumerate(issued):
            carried = [
                line
                for _, later in issued[i + 1 :]
                for line in later.lines
                if line.kind is LineKind.ADJUSTMENT and line.ref_period == closed
            ]
            out += adjustment_lines(inv, self.rate(tenant, closed), already_adjusted=carried)
        return out

    def issue(self, tenant: str, period: str, now: float | None = None) -> Invoice:
        """Close the period for the tenant: the invoice as it stands is kept and never
        changes after. Only a period that has ended can be issued."""
        p = parse_period(period)
        now = time.time() if now is None else now
        if now < p.end:
            raise FailedPreconditionError(f"period {period} has not ended yet: it cannot be issued before it closes")
        existing = self.issued(tenant, period)
        if existing is not None:
            return existing
        inv = self.rate(tenant, period, self.adjustments(tenant, period))
        self._db.execute(
            "INSERT INTO invoices (tenant, period, issued_at, body) VALUES (?, ?, ?, ?)",
            (tenant, period, now, render_json(inv)),
        )
        logger.info("issued invoice %s %s: total %s %s", tenant, period, inv.total, inv.currency)
        return inv
