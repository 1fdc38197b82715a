"""Billing: rate card, exact Decimal rating, invoices with commitments, credits and adjustments, CloudEvents export.
Imports metering's rows, the store and neocloud.domain; never the executor, ingest or the API."""
