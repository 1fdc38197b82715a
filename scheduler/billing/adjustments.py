"""Corrections to a closed period: the difference between what was invoiced and what is now known.

An issued invoice is never changed. When late telemetry (a replayed spool, a
reconciled counter) changes a closed period's rows, the period is rated again
and each line whose amount moved becomes an adjustment line, which goes on the
next invoice (`rating.invoice(..., adjustments=...)`). Lines are matched by
`Line.key` (kind, class, model, contract), so a line that appears or vanishes
is adjusted by its whole amount. Adjustment lines already on an issued invoice
belong to an earlier period and are not compared again; storing issued
invoices is the caller's job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal

from neocloud.scheduler.billing.currency import zero
from neocloud.scheduler.billing.invoice import BillingError, Invoice, Line, LineKind, Reason

logger = logging.getLogger(__name__)


def adjustment_lines(issued: Invoice, recomputed: Invoice, *, already_adjusted: Iterable[Line] = ()) -> list[Line]:
    """Adjustment lines that carry `issued` to `recomputed`.

    `already_adjusted` are adjustment lines for the same period put on later
    invoices before (when a period is corrected twice): they count as billed.
    """
    if (issued.tenant, issued.period) != (recomputed.tenant, recomputed.period):
        raise BillingError(
            f"cannot adjust {issued.tenant} {issued.period} by {recomputed.tenant} {recomputed.period}: "
            "not the same invoice"
        )
    if issued.currency != recomputed.currency:
        raise BillingError(
            f"{issued.tenant}'s {issued.period} invoice was issued in {issued.currency}, and the rate card now "
            f"rates in {recomputed.currency}: a correction cannot be carried across currencies",
            Reason.CURRENCY,
        )
    nothing = zero(issued.currency)
    billed: dict[tuple[str, ...], tuple[Decimal, Decimal, Line]] = {}
    for line in _own(issued):
        billed[line.key] = (line.amount, line.quantity, line)
    for adj in already_adjusted:
        if adj.kind is not LineKind.ADJUSTMENT or adj.ref_period != issued.period:
            raise BillingError(f"already_adjusted must be adjustment lines for {issued.period}")
        key = _original_key(adj)
        amount, quantity, line = billed.get(key, (nothing, Decimal(0), adj))
        billed[key] = (amount + adj.amount, quantity + adj.quantity, line)
    now = {line.key: line for line in _own(recomputed)}
    for key, line in now.items():
        billed.setdefault(key, (nothing, Decimal(0), line))  # new since issue: nothing billed yet

    out: list[Line] = []
    for key, (was_amount, was_quantity, was) in billed.items():
        current = now.get(key)
        new_amount = current.amount if current is not None else nothing
        new_quantity = current.quantity if current is not None else Decimal(0)
        if new_amount == was_amount:
            continue
        ref = current or was  # describe it as it is now, or as it was if it vanished
        out.append(
            Line(
                kind=LineKind.ADJUSTMENT,
                description=f"Adjustment {issued.period}: {_plain(ref.description)}",
                quantity=new_quantity - was_quantity,
                unit=ref.unit,
                unit_price=ref.unit_price,
                amount=new_amount - was_amount,
                job_class=ref.job_class,
                gpu_model=ref.gpu_model,
                contract_id=ref.contract_id,
                ref_period=issued.period,
                ref_kind=(ref.ref_kind if ref.kind is LineKind.ADJUSTMENT else ref.kind.value),
                rate_version=ref.rate_version,
            )
        )
    if out:
        logger.info(
            "%s %s: %d adjustment line(s), %s %s",
            issued.tenant,
            issued.period,
            len(out),
            sum((a.amount for a in out), nothing),
            issued.currency,
        )
    return out


def _own(inv: Invoice) -> list[Line]:
    return [line for line in inv.lines if line.kind is not LineKind.ADJUSTMENT]


def _original_key(adj: Line) -> tuple[str, ...]:
    """The key of the line an adjustment corrects."""
    return (adj.ref_kind, adj.job_class, adj.gpu_model, adj.contract_id, "", "")


def _plain(description: str) -> str:
    prefix = "Adjustment "
    return description.split(": ", 1)[1] if description.startswith(prefix) and ": " in description else description
