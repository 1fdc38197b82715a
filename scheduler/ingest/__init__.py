"""Telemetry ingest: the agents' gRPC streams validated, applied to the live fleet, committed, then acknowledged.
Imports the store, metering's attribution, neocloud.domain, neocloud.wire and neocloud.v1."""
