"""Persistence on SQLite: jobs, allocations, tokens, settings, telemetry state, ledger rows; numbered migrations.
Imports neocloud.domain and the policy's plain types only."""
