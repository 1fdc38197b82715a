"""Persistence on SQLite: jobs, allocations, tokens, settings, telemetry state, ledger rows; numbered migrations.
Imports neocloud.domain and the policy's plain types only."""

from neocloud.scheduler.store.db import StoreError, open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobState, Role

__all__ = ["JobState", "JobStore", "Role", "StoreError", "open_db"]
