"""The usage ledger: one row per (allocation, GPU model, UTC hour), and per idle GPU-hour.

Metering (closing) an hour reads, from the store, the allocations that overlap
it (GPU-seconds come from their intervals alone, never from telemetry) and the
energy and tick statistics ingest attributed to each (GPU, owner) in that hour
(attribution.py), and replaces the hour's rows in one transaction. Row ids are
deterministic, so metering an hour again, after late telemetry or a closed
allocation, replaces rows and never counts anything twice.

Which hours to meter: the ones marked dirty (ingest marks the hours it
attributed energy to; triggers mark the hours allocations open and close in),
the current hour, and any hour metered only part-way.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from neocloud.domain.durations import Durations
from neocloud.domain.hours import HOUR_S, hour_of
from neocloud.scheduler.metering.usage import IDLE_CLASS, usage_id

logger = logging.getLogger(__name__)

_US = 1_000_000
MAX_GAP_S = 31 * 24 * HOUR_S  # how far back a gap in the metered hours is filled
UNKNOWN_MODEL = "unknown"  # a GPU energy was attributed to but the store no longer lists


@dataclass(frozen=True, slots=True)
class _Allocation:
    allocation_id: str
    job_id: str
    tenant: str
    job_class: str
    contract_id: str | None
    gpu_uuids: tuple[str, ...]
    start: float
    end: float | None


@dataclass(frozen=True, slots=True)
class HourResult:
    hour: int
    metered_to: float
    rows: Sequence[tuple[object, ...]]  # UsageRow's fields in order (tuples: an hour of a fleet is ~200k rows)
    wall_gpu_ms: int


@dataclass(slots=True)
class LedgerStats:
    passes_total: int = 0
    failures_total: int = 0
    pass_seconds: Durations = field(default_factory=Durations)
    metered_to: float = 0.0  # the ledger covers the fleet up to here (Unix s)


class Ledger:
    """Meters hours into the `usage` table. Give it a connection of its own (open_db):
    its reads are long and must not hold the API's or ingest's lock."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self.stats = LedgerStats()

    # --- which hours --------------------------------------------------------------

    def hours_due(self, now: float) -> list[int]:
        """Marked hours (telemetry or allocations changed them), hours metered only part-way,
        hours never metered since the last one that was (a gap while nothing reported), and now."""
        current = hour_of(now)
        dirty = {int(r[0]) for r in self._db.execute("SELECT hour FROM meter_dirty WHERE hour <= ?", (current,))}
        partial = {
            int(r[0])
            for r in self._db.execute(
                "SELECT hour FROM meter_hours WHERE metered_to < hour + ? AND hour < ?", (HOUR_S, current)
            )
        }
        (last,) = self._db.execute("SELECT MAX(hour) FROM meter_hours WHERE hour < ?", (current,)).fetchone()
        gap = set(range(max(int(last) + HOUR_S, current - MAX_GAP_S), current, HOUR_S)) if last is not None else set()
        return sorted(dirty | partial | gap | {current})

    def run_pass(self) -> list[HourResult]:
        """Meter every hour that is due. A mark is cleared only with the hour's rows, and only if
        nothing marked the hour again meanwhile; an hour that fails stays due."""
        started = time.monotonic()
        now = self._clock()
        results = []
        for hour in self.hours_due(now):
            try:
                stamp = self._db.execute("SELECT stamp FROM meter_dirty WHERE hour = ?", (hour,)).fetchone()
                results.append(self.meter_hour(hour, now, stamp[0] if stamp else None))
            except Exception:
                self.stats.failures_total += 1
                logger.exception("metering hour %d failed; it stays due", hour)
        self.stats.passes_total += 1
        self.stats.pass_seconds.observe(time.monotonic() - started)
        self.stats.metered_to = now
        return results

    # --- one hour ----------------------------------------------------------------

    def meter_hour(self, hour: int, now: float | None = None, stamp: int | None = None) -> HourResult:
        """Replace the hour's rows; clear its mark if it still carries `stamp` (read before computing)."""
        result = self.compute_hour(hour, self._clock() if now is None else now)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM usage WHERE hour = ?", (hour,))
            self._db.executemany(
                "INSERT INTO usage (usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id,"
                " hour, gpu_ms, energy_mj, util_gpu_ms, peak_power_mw, memory_peak_bytes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                result.rows,
            )
            self._db.execute(
                "INSERT OR REPLACE INTO meter_hours (hour, metered_to, wall_gpu_ms) VALUES (?, ?, ?)",
                (hour, result.metered_to, result.wall_gpu_ms),
            )
            if stamp is not None:
                self._db.execute("DELETE FROM meter_dirty WHERE hour = ? AND stamp = ?", (hour, stamp))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return result

    def compute_hour(self, hour: int, now: float) -> HourResult:
        """The hour's rows from one consistent read of the store (no writes): energy and
        tick statistics from the cells ingest attributed, GPU-seconds from the
        allocation intervals alone."""
        hi = min(hour + HOUR_S, now)
        self._db.execute("BEGIN")
        try:
            gpus = self._gpus(hour, hi)
            allocations = {a.allocation_id: a for a in self._allocations(hour, hi)}
            stats = self._cells(hour, allocations)
        finally:
            self._db.execute("COMMIT")
        model_of = {uuid: model for uuid, model, _ in gpus}
        busy_s: dict[str, float] = defaultdict(float)
        seconds: dict[tuple[str, str], float] = defaultdict(float)
        for a in allocations.values():
            overlap = max(0.0, min(a.end if a.end is not None else hi, hi) - max(a.start, hour))
            for uuid in a.gpu_uuids:
                seconds[(a.allocation_id, model_of.get(uuid, UNKNOWN_MODEL))] += overlap
                busy_s[uuid] += overlap
        wall_s = 0.0
        for uuid, model, first_seen in gpus:
            window = max(0.0, hi - first_seen)
            wall_s += window
            seconds[(f"idle:{uuid}", model)] += max(0.0, window - busy_s[uuid])
        no_cell = (0.0, 0, 0, 0, 0)
        rows = []
        for key, model in seconds.keys() | stats.keys():
            gpu_s = seconds.get((key, model), 0.0)
            energy, util_sum, util_count, peak, memory = stats.get((key, model), no_cell)
            gpu_ms, energy_mj = round(gpu_s * 1000), max(0, round(energy))
            if not (gpu_ms or energy_mj):
                continue
            util_ms = round(gpu_ms * util_sum / util_count / 100) if util_count else 0
            held = allocations.get(key)
            who = (
                (held.tenant, held.job_id, key, model, held.job_class, held.contract_id)
                if held
                else ("", "", key, model, IDLE_CLASS, None)
            )
            rows.append((usage_id(key, model, hour), *who, hour, gpu_ms, energy_mj, util_ms, peak, memory))
        rows.sort()  # by usage id: the inserts then walk the primary key in order
        return HourResult(hour, hi, rows, round(wall_s * 1000))

    # --- reads ---------------------------------------------------------------------

    def _gpus(self, lo: float, hi: float) -> list[tuple[str, str, float]]:
        """(uuid, model, metered from) of every GPU known before `hi`."""
        rows = self._db.execute(
            "SELECT g.uuid, g.model, n.first_seen_us FROM gpus g JOIN nodes n ON n.node_id = g.node_id"
            " WHERE n.first_seen_us < ?",
            (hi * _US,),
        )
        return [(str(u), str(m), max(lo, int(f) / _US)) for u, m, f in rows]

    def _allocations(self, lo: float, hi: float) -> list[_Allocation]:
        return self._query(" WHERE a.start < ? AND (a.end IS NULL OR a.end > ?)", (hi, lo))

    def _query(self, where: str, params: tuple[object, ...]) -> list[_Allocation]:
        rows = self._db.execute(
            "SELECT a.allocation_id, a.job_id, a.tenant, a.job_class, j.contract_id, a.gpu_uuids, a.start, a.end"
            " FROM allocations a JOIN jobs j ON j.job_id = a.job_id" + where,
            params,
        )
        return [_Allocation(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7]) for r in rows]

    def _cells(self, hour: int, held: Mapping[str, object]) -> dict[tuple[str, str], tuple[float, int, int, int, int]]:
        """(allocation id or "idle:<uuid>", GPU model) -> (energy mJ, utilisation sum, count, peak
        power mW, memory peak B) ingest attributed in the hour, summed over the allocation's GPUs by
        SQLite. Energy ingest gave an allocation that, as closed later, did not hold the GPU in this
        hour at all (its end reported late) is the GPU's idle energy."""
        rows = self._db.execute(
            "SELECT CASE WHEN c.owner = '' OR c.owner NOT IN (SELECT value FROM json_each(?))"
            " THEN 'idle:' || c.uuid ELSE c.owner END AS k,"
            " COALESCE(g.model, ?), SUM(c.energy_mj), SUM(c.util_sum), SUM(c.util_count), MAX(c.peak_power_mw),"
            " MAX(c.memory_peak_bytes) FROM meter_cells c LEFT JOIN gpus g ON g.uuid = c.uuid WHERE c.hour = ?"
            " GROUP BY k, g.model",
            (json.dumps(list(held)), UNKNOWN_MODEL, hour),
        )
        return {(r[0], r[1]): r[2:] for r in rows}
