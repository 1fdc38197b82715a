"""Month-to-date usage per (tenant, class), kept up to date from the hours each ledger
pass meters rather than re-summed from the whole usage table: the store is read once
a month (and at start) for the month so far; after that each pass replaces only the
hours it metered. Re-metering an hour replaces that hour's share, so a figure moves
only as much as the hour's rows changed, and a new month starts again from zero."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterable
from dataclasses import fields

from neocloud.scheduler.metering.ledger import HourResult
from neocloud.scheduler.metering.usage import UsageRow

Key = tuple[str, str]  # (tenant, class); idle is ("", "idle")
# Where the tenant, class and quantities sit in a HourResult row (UsageRow's field order).
_FIELDS = [f.name for f in fields(UsageRow)]
_TENANT, _CLASS, _GPU_MS, _ENERGY_MJ = (_FIELDS.index(n) for n in ("tenant", "job_class", "gpu_ms", "energy_mj"))


def month_bounds(t: float) -> tuple[int, int]:
    """Unix seconds of the start of the UTC month holding `t`, and of the next."""
    day = dt.datetime.fromtimestamp(t, dt.UTC)
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return int(start.timestamp()), int(end.timestamp())


class MonthToDate:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._month: tuple[int, int] | None = None
        self._hours: dict[int, dict[Key, tuple[int, int]]] = {}  # hour -> key -> (gpu_ms, energy_mj)

    def update(self, results: Iterable[HourResult], now: float) -> None:
        """Take in one pass's metered hours (call after the pass, on the ledger's connection)."""
        month = month_bounds(now)
        if month != self._month:
            self._load(month)
        lo, hi = month
        for result in results:
            if lo <= result.hour < hi:
                self._hours[result.hour] = _hour_totals(result.rows)

    def totals(self) -> tuple[dict[Key, float], dict[Key, float]]:
        """GPU-seconds and joules per key, this month so far."""
        ms: dict[Key, int] = {}
        mj: dict[Key, int] = {}
        for cells in self._hours.values():
            for key, (gpu_ms, energy_mj) in cells.items():
                ms[key] = ms.get(key, 0) + gpu_ms
                mj[key] = mj.get(key, 0) + energy_mj
        return {k: v / 1000 for k, v in ms.items()}, {k: v / 1000 for k, v in mj.items()}

    def _load(self, month: tuple[int, int]) -> None:
        self._month, self._hours = month, {}
        for hour, tenant, cls, gpu_ms, energy_mj in self._db.execute(
            "SELECT hour, tenant, job_class, SUM(gpu_ms), SUM(energy_mj) FROM usage"
            " WHERE hour >= ? AND hour < ? GROUP BY hour, tenant, job_class",
            month,
        ):
            self._hours.setdefault(hour, {})[(tenant, cls)] = (gpu_ms, energy_mj)


def _hour_totals(rows: Iterable[tuple[object, ...]]) -> dict[Key, tuple[int, int]]:
    out: dict[Key, tuple[int, int]] = {}
    for row in rows:
        key = (str(row[_TENANT]), str(row[_CLASS]))
        ms, mj = out.get(key, (0, 0))
        out[key] = (ms + int(row[_GPU_MS]), mj + int(row[_ENERGY_MJ]))  # type: ignore[call-overload]
    return out
