"""Persistence on SQLite: jobs, allocations, tokens, settings, telemetry state and ledger rows, with numbered migrations.
Imports neocloud.domain and the policy's plain types only."""
