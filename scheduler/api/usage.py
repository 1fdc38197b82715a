"""neocloud.v1.UsageService: a tenant's invoices and usage from the ledger.
Tenants and internal tokens read their own; operators name the tenant (NOT_FOUND
for one that does not exist). Invoices are rated with the rate card in force
(scheduler/billing/live.py), so an applied version counts without a restart."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import grpc

from neocloud.domain.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError
from neocloud.scheduler.api.auth import Authenticator, own_tenant
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.invoice import Invoice, parse_period
from neocloud.scheduler.billing.live import LiveRateCard
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.billing.render import render_json
from neocloud.scheduler.billing.reports import tenant_usage
from neocloud.scheduler.policy.types import INTERNAL_TENANT
from neocloud.scheduler.store import ratecards
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Principal
from neocloud.v1 import usage_pb2 as pb
from neocloud.v1 import usage_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext
T = TypeVar("T")

GROUPING = {
    pb.USAGE_GROUPING_UNSPECIFIED: "job",
    pb.USAGE_GROUPING_JOB: "job",
    pb.USAGE_GROUPING_DAY: "day",
    pb.USAGE_GROUPING_MODEL: "model",
}


class UsageService(pb_grpc.UsageServiceServicer):
    def __init__(self, store: JobStore, db: sqlite3.Connection, card: RateCard | None) -> None:
        """`db`: a connection of the service's own (reads only; one at a time)."""
        self._auth = Authenticator(store)
        self._store = store
        self._db = db
        self._books = Books(db, card)
        self._cards = LiveRateCard(lambda: ratecards.latest(db), card)  # called under self._lock
        self._lock = threading.Lock()

    async def GetInvoice(self, request: pb.GetInvoiceRequest, context: Context) -> pb.GetInvoiceResponse:  # noqa: N802
        tenant = _tenant(await self._auth.principal(context), request.tenant)
        parse_period(request.period)  # a bad period is the caller's error, before any work
        if tenant != INTERNAL_TENANT and not await asyncio.to_thread(self._store.tenant_exists, tenant):
            raise NotFoundError(f"tenant {tenant!r} does not exist (neocloud admin tenant list)")
        invoice = await self._read(self._invoice, tenant, request.period)
        return pb.GetInvoiceResponse(invoice_json=render_json(invoice))

    def _invoice(self, tenant: str, period: str) -> Invoice:
        return Books(self._db, self._cards.current()).invoice(tenant, period)

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:  # noqa: N802
        tenant = _tenant(await self._auth.principal(context), request.tenant)
        by = GROUPING.get(request.group_by)
        if by is None:
            raise InvalidArgumentError(f"group_by {request.group_by} is not a UsageGrouping")
        p = parse_period(request.period)
        rows = await self._read(self._books.rows, p.start, p.end, tenant)
        groups = [
            pb.UsageGroup(
                key=g[by],
                gpu_hours=g["gpu_hours"],
                energy_kwh=g["energy_kwh"],
                utilised_gpu_hours=g["utilised_gpu_hours"],
            )
            for g in tenant_usage(rows, by)
        ]
        return pb.GetUsageResponse(groups=groups)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)


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
