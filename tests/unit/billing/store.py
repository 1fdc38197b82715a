"""A real scheduler store with billing data written straight into its tables: what the
ledger and the admin API would have left there, broken rows included."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from neocloud.scheduler.metering.usage import UsageRow
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.records import ContractRecord, ContractShortfall


def open_store(path: Path, tenants: tuple[str, ...]) -> sqlite3.Connection:
    db = open_db(path)
    db.executemany("INSERT INTO tenants (name, created_at) VALUES (?, 0)", [(t,) for t in tenants])
    return db


def put_rows(db: sqlite3.Connection, rows: list[UsageRow]) -> None:
    db.executemany(
        "INSERT INTO usage (usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id, hour,"
        " gpu_ms, energy_mj, util_gpu_ms, peak_power_mw, memory_peak_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [dataclasses.astuple(r) for r in rows],  # fields in the table's column order
    )


def put_contract(db: sqlite3.Connection, c: ContractRecord) -> None:
    db.execute(
        "INSERT INTO contracts (contract_id, tenant, start, end, gpus, power_w, gpu_model, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
        (c.contract_id, c.tenant, c.start, c.end, c.gpus, c.power_w, c.gpu_model),
    )


def put_shortfall(db: sqlite3.Connection, s: ContractShortfall) -> None:
    db.execute(
        "INSERT INTO contract_shortfalls (contract_id, tenant, hour, undelivered_gpu_ms) VALUES (?, ?, ?, ?)",
        (s.contract_id, s.tenant, s.hour, s.undelivered_gpu_ms),
    )


def put_issued(db: sqlite3.Connection, tenant: str, period: str, body: str) -> None:
    db.execute("INSERT INTO invoices (tenant, period, issued_at, body) VALUES (?, ?, 0, ?)", (tenant, period, body))
