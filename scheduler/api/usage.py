"""neocloud.v1.UsageService: a tenant's invoices, usage and usage export from the ledger.
Tenants and internal tokens read their own; operators name the tenant (NOT_FOUND
for one that does not exist). Invoices and job costs are rated with the rate card in
force (scheduler/billing/live.py), so an applied version counts without a restart.
Every call reads at most one calendar month."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar

import grpc

from neocloud.domain.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from neocloud.scheduler.api.auth import Authenticator, own_tenant
from neocloud.scheduler.billing import export
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.invoice import BillingError, Invoice, Period, parse_period
from neocloud.scheduler.billing.live import LiveRateCard
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.billing.rating import invoice as rate_invoice
from neocloud.scheduler.billing.render import render_json
from neocloud.scheduler.billing.reports import job_costs, tenant_usage
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.policy.types import INTERNAL_TENANT
from neocloud.scheduler.store import ratecards
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Principal
from neocloud.v1 import usage_pb2 as pb
from neocloud.v1 import usage_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext
T = TypeVar("T")

_LAST_SECOND = 253_402_300_800  # 10000-01-01T00:00Z: the last period is 9999-12

GROUPING = {
    pb.USAGE_GROUPING_UNSPECIFIED: "job",
    pb.USAGE_GROUPING_JOB: "job",
    pb.USAGE_GROUPING_DAY: "day",
    pb.USAGE_GROUPING_MODEL: "model",
}


class UsageService(pb_grpc.UsageServiceServicer):
    def __init__(
        self, store: JobStore, db: sqlite3.Connection, card: RateCard | None, auth: Authenticator | None = None
    ) -> None:
        """`db`: a connection of the service's own (reads only; one at a time)."""
        self._auth = auth or Authenticator(store)
        self._store = store
        self._db = db
        self._books = Books(db, card)
        self._cards = LiveRateCard(lambda: ratecards.latest(db), card)  # called under self._lock
        self._lock = threading.Lock()

    async def GetInvoice(self, request: pb.GetInvoiceRequest, context: Context) -> pb.GetInvoiceResponse:  # noqa: N802
        tenant = await self._tenant(context, request.tenant)
        parse_period(request.period)  # a bad period is the caller's error, before any work
        invoice = await self._read(self._invoice, tenant, request.period)
        return pb.GetInvoiceResponse(invoice_json=render_json(invoice))

    def _invoice(self, tenant: str, period: str) -> Invoice:
        return Books(self._db, self._cards.current()).invoice(tenant, period)

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:  # noqa: N802
        tenant = _tenant(await self._auth.principal(context), request.tenant)
        by = GROUPING.get(request.group_by)
        if by is None:
            raise InvalidArgumentError(f"group_by {request.group_by} is not a UsageGrouping")
        p, start, end = _range(request)
        rows = await self._read(self._books.rows, start, end, tenant)
        reply = pb.GetUsageResponse(
            groups=[
                pb.UsageGroup(
                    key=g[by],
                    gpu_hours=g["gpu_hours"],
                    energy_kwh=g["energy_kwh"],
                    utilised_gpu_hours=g["utilised_gpu_hours"],
                )
                for g in tenant_usage(rows, by)
            ]
        )
        if by == "job":
            await self._read(self._price_jobs, reply, tenant, p, start, end)
        return reply

    def _price_jobs(self, reply: pb.GetUsageResponse, tenant: str, p: Period, start: int, end: int) -> None:
        """Each job's cost (reports.job_costs) on an invoice rated from the hours in [start, end)."""
        card = self._cards.current()
        if card is None:
            reply.unpriced = "the scheduler has no rate card (--rate-card, or neocloud admin ratecard apply)"
            return
        books = Books(self._db, card)
        allocations = books.allocation_totals(start, end, tenant)
        try:
            rated = rate_invoice(tenant, p.name, allocations, books.contracts(tenant), [], card)
            costs: dict[str, Decimal] = job_costs(rated, allocations, card.billing_increment_s)
        except BillingError as e:  # this tenant's usage cannot be rated: its usage is still shown
            reply.unpriced = str(e)
            return
        reply.currency, reply.rate_version = card.currency, card.version
        for g in reply.groups:
            g.cost = str(costs[g.key])

    async def ExportUsage(self, request: pb.ExportUsageRequest, context: Context) -> AsyncIterator[pb.UsagePage]:  # noqa: N802
        tenant = await self._tenant(context, request.tenant)
        p = parse_period(request.period)
        card = await self._read(self._cards.current)
        page = pb.UsagePage(rate_version=card.version if card else "", currency=card.currency if card else "")
        sent = 0
        for start, end in export.windows(p):  # a day at a time: the server never holds a month
            rows: list[UsageRow] = await self._read(self._books.rows, start, end, tenant)
            for row in rows:
                page.records.append(export.to_record(row))
                if len(page.records) == export.PAGE_ROWS:
                    yield page
                    sent, page = sent + 1, pb.UsagePage()
        if page.records or not sent:
            yield page
        logger.debug("exported %s's usage of %s", tenant, p.name)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    async def _tenant(self, context: Context, asked: str) -> str:
        """The tenant the caller may read, which must exist (NOT_FOUND names the command to list them)."""
        tenant = _tenant(await self._auth.principal(context), asked)
        if tenant != INTERNAL_TENANT and not await asyncio.to_thread(self._store.tenant_exists, tenant):
            raise NotFoundError(f"tenant {tenant!r} does not exist (neocloud admin tenant list)")
        return tenant


def _range(request: pb.GetUsageRequest) -> tuple[Period, int, int]:
    """The month and the [start, end) seconds a GetUsage request reads: its period, or
    since/until inside one calendar month."""
    ranged = request.HasField("since") or request.HasField("until")
    if request.period:
        if ranged:
            raise InvalidArgumentError("give period or since/until, not both")
        p = parse_period(request.period)
        return p, p.start, p.end
    if not (request.HasField("since") and request.HasField("until")):
        raise InvalidArgumentError("give period (YYYY-MM), or both since and until (Unix seconds)")
    since, until = request.since, request.until
    if not (math.isfinite(since) and math.isfinite(until) and 0 <= since < until <= _LAST_SECOND):
        raise InvalidArgumentError(
            f"since ({since}) and until ({until}) must be Unix seconds, since < until, before the year 10000"
        )
    p = _month_of(since)
    if until > p.end:
        raise InvalidArgumentError(
            f"since and until must lie in one calendar month: until is after {p.name} ends; ask a month per call"
        )
    # A usage row covers a whole hour: the rows whose hour starts in [since, until).
    return p, math.ceil(since), math.ceil(until)


def _month_of(t: float) -> Period:
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    return parse_period(f"{when.year:04d}-{when.month:02d}")


def _tenant(principal: Principal, asked: str) -> str:
    """The tenant the caller may read: its own, or (operators) the one it names."""
    own = own_tenant(principal)
    if own is None:
        if not asked:
            raise InvalidArgumentError("operators name the tenant whose usage or invoice they want")
        return asked
    if asked and asked != own:
        logger.warning("token %s (%s) asked for tenant %s's usage", principal.token_name, own, asked)
        raise PermissionDeniedError(f"your token reads only {own}'s usage, not {asked}'s")
    return own
