"""An invoice as a plain-text table for people, as JSON for programs, and as CSV for spreadsheets.

JSON carries every Decimal as a string ("1234.50"), so no reader turns money
into float on the way; keys come in a fixed order, so the same invoice always
renders to the same bytes. `invoice_from_json` reads it back and checks the
stated subtotal and total against the lines. Format 2 added each line's
`rate_version`; format 1 (invoices issued before it) reads back with it empty.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.billing.currency import minor_units
from neocloud.scheduler.billing.invoice import Invoice, Line, LineKind

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
_READABLE_FORMATS = frozenset({1, FORMAT_VERSION})
LINE_FIELDS = (
    "kind",
    "description",
    "job_class",
    "gpu_model",
    "contract_id",
    "ref_period",
    "ref_kind",
    "quantity",
    "unit",
    "unit_price",
    "amount",
    "rate_version",
)
_DECIMAL_FIELDS = frozenset({"quantity", "unit_price", "amount"})
CSV_FIELDS = ("tenant", "period", "currency", *LINE_FIELDS)


def _line_dict(line: Line) -> dict[str, str]:
    return {name: str(getattr(line, name)) for name in LINE_FIELDS}


def to_dict(inv: Invoice) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "tenant": inv.tenant,
        "period": inv.period,
        "currency": inv.currency,
        "lines": [_line_dict(line) for line in inv.lines],
        "subtotal": str(inv.subtotal),
        "adjustments": str(inv.adjustments),
        "total": str(inv.total),
    }


def render_json(inv: Invoice) -> str:
    return json.dumps(to_dict(inv), indent=2, ensure_ascii=False) + "\n"


def invoice_from_json(text: str) -> Invoice:
    """Read `render_json` output back; a total that disagrees with the lines is an error."""
    try:
        doc = json.loads(text)
        if doc.get("format") not in _READABLE_FORMATS:
            raise InvalidArgumentError(f"invoice JSON format {doc.get('format')!r} is not one of 1, {FORMAT_VERSION}")
        minor_units(doc["currency"])
        lines = tuple(_line_from(raw) for raw in doc["lines"])
        inv = Invoice(tenant=doc["tenant"], period=doc["period"], currency=doc["currency"], lines=lines)
        stated = (Decimal(doc["subtotal"]), Decimal(doc["total"]))
    except (ValueError, LookupError, TypeError, AttributeError, InvalidOperation) as e:
        raise InvalidArgumentError(f"not an invoice in JSON: {e!r}") from e
    if stated != (inv.subtotal, inv.total):
        raise InvalidArgumentError(
            f"invoice JSON states subtotal {stated[0]} and total {stated[1]}, "
            f"but its lines add up to {inv.subtotal} and {inv.total}"
        )
    return inv


def _line_from(raw: dict[str, str]) -> Line:
    values: dict[str, Any] = {}
    for name in LINE_FIELDS:
        value = raw.get(name, "") if name == "rate_version" else raw[name]  # format 1 had none
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {type(value).__name__}")
        values[name] = Decimal(value) if name in _DECIMAL_FIELDS else value
    values["kind"] = LineKind(values["kind"])
    return Line(**values)


def render_csv(inv: Invoice) -> str:
    """One header row, then one row per line (no subtotal row: a sum of `amount` gives it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for line in inv.lines:
        row = _line_dict(line)
        writer.writerow([inv.tenant, inv.period, inv.currency, *(row[name] for name in LINE_FIELDS)])
    return buf.getvalue()


def _money(value: Decimal, currency: str) -> str:
    return f"{value:,.{minor_units(currency)}f}"


def _number(value: Decimal) -> str:
    """A quantity or unit price without trailing zeros past what it needs (2 places at least)."""
    text = f"{value:,f}"
    if "." in text:
        head, tail = text.split(".")
        tail = tail.rstrip("0").ljust(2, "0")
        return f"{head}.{tail}"
    return text + ".00"


def render_table(inv: Invoice) -> str:
    """An aligned plain-text table: header, one row per line, subtotal, adjustments, total."""
    header = ("Description", "Quantity", "Unit", "Unit price", "Amount")
    rows = [
        (ln.description, _number(ln.quantity), ln.unit, _number(ln.unit_price), _money(ln.amount, inv.currency))
        for ln in inv.lines
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    left = (True, False, True, False, False)

    def fmt(cells: tuple[str, ...]) -> str:
        parts = [c.ljust(w) if lf else c.rjust(w) for c, w, lf in zip(cells, widths, left, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(fmt(tuple("-" * w for w in widths)))
    versions = sorted({ln.rate_version for ln in inv.lines if ln.rate_version})
    out = [
        f"Invoice  tenant: {inv.tenant}  period: {inv.period}  currency: {inv.currency}",
        "",
        fmt(header),
        rule,
    ]
    out.extend(fmt(r) for r in rows)
    if not rows:
        out.append("(no charges)")
    out.append(rule)
    totals = [("Subtotal", inv.subtotal)]
    if any(ln.kind is LineKind.ADJUSTMENT for ln in inv.lines):
        totals.append(("Adjustments", inv.adjustments))
    totals.append((f"Total {inv.currency}", inv.total))
    width = len(rule)
    for label, value in totals:
        amount = _money(value, inv.currency)
        out.append(label + amount.rjust(width - len(label)))
    if versions:
        out.append(f"Rate card: {', '.join(versions)}")
    return "\n".join(out) + "\n"
