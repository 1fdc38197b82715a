"""Metering: counter energy attributed to the allocation that held each GPU, the hourly usage ledger, audit replay.
Imports the store, the policy's plain types and neocloud.domain; never billing, ingest, the executor or the API."""

from neocloud.scheduler.metering.ledger import Ledger
from neocloud.scheduler.metering.usage import IDLE_CLASS, UsageRow, usage_id

__all__ = ["IDLE_CLASS", "Ledger", "UsageRow", "usage_id"]
