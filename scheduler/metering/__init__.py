"""Metering: counter energy attributed to the allocation that held each GPU, the hourly usage ledger, audit replay.
Imports the store, the policy's plain types and neocloud.domain; never billing, ingest, the executor or the API."""
