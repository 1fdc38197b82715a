"""Undelivered reserved capacity, per contract and UTC hour, for SLA credits."""

from __future__ import annotations

from collections.abc import Iterable

from neocloud.scheduler.store.base import StoreBase
from neocloud.scheduler.store.records import ContractShortfall


class ShortfallStore(StoreBase):
    def add(self, shortfalls: Iterable[ContractShortfall]) -> None:
        """Add undelivered GPU-milliseconds to each (contract, hour), in one transaction."""
        rows = [(s.contract_id, s.hour, s.tenant, s.undelivered_gpu_ms) for s in shortfalls if s.undelivered_gpu_ms > 0]
        if not rows:
            return
        with self._write() as db:
            db.executemany(
                "INSERT INTO contract_shortfalls (contract_id, hour, tenant, undelivered_gpu_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (contract_id, hour) DO UPDATE SET"
                " undelivered_gpu_ms = undelivered_gpu_ms + excluded.undelivered_gpu_ms",
                rows,
            )

    def total(self, contract_id: str) -> int:
        with self._read() as db:
            row = db.execute(
                "SELECT COALESCE(SUM(undelivered_gpu_ms), 0) FROM contract_shortfalls WHERE contract_id = ?",
                (contract_id,),
            ).fetchone()
        return int(row[0])
