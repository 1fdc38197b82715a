"""Billing: rate card, exact Decimal rating, invoices with commitments, credits and adjustments, CloudEvents export.
Imports metering's rows, the store and neocloud.domain; never the executor, ingest or the API."""

from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.invoice import Invoice, LineKind, parse_period
from neocloud.scheduler.billing.ratecard import ContractTerms, RateCard, load_ratecard, parse_ratecard
from neocloud.scheduler.billing.render import render_table
from neocloud.scheduler.billing.reports import fleet_split

__all__ = [
    "Books",
    "ContractTerms",
    "Invoice",
    "LineKind",
    "RateCard",
    "fleet_split",
    "load_ratecard",
    "parse_period",
    "parse_ratecard",
    "render_table",
]
