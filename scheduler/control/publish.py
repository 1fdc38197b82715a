"""What each pass leaves for the rest of the scheduler: the allocation book ingest
attributes energy by, the reserved GPUs the fleet did not deliver (recorded for
SLA credits), and the view the exporter reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from neocloud.domain.hours import hour_of, hour_pieces
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.policy.types import PolicyInput
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import ContractShortfall
from neocloud.scheduler.store.shortfalls import ShortfallStore

logger = logging.getLogger(__name__)

# Telemetry up to a day late (an agent cut off, spooling) still finds its allocations.
BOOK_HORIZON_S = 24 * 3600.0
BOOK_MARGIN_S = 5.0
BOOK_REBUILD_S = 600.0
MAX_SHORTFALL_STEP_S = 60.0


@dataclass(frozen=True, slots=True)
class ControllerView:
    """What the last pass saw, for the exporter (replaced whole, read without locks)."""

    power_budget_w: float = float("inf")
    allocated: dict[tuple[str, str], int] = field(default_factory=dict)  # (class, tenant) -> GPUs
    undelivered: dict[tuple[str, str], int] = field(default_factory=dict)  # (contract, tenant) -> GPUs


def view_of(policy_input: PolicyInput, missing: dict[str, int]) -> ControllerView:
    allocated: dict[tuple[str, str], int] = {}
    for job in policy_input.running:
        key = (job.job_class.name.lower(), job.tenant)
        allocated[key] = allocated.get(key, 0) + sum(len(uuids) for _, uuids in job.placement)
    tenants = {c.contract_id: c.tenant for c in policy_input.contracts}
    return ControllerView(
        policy_input.config.site_power_budget_w, allocated, {(c, tenants[c]): n for c, n in missing.items()}
    )


class BookPublisher:
    """Gives ingest the allocations it attributes energy by. Final only up to a
    margin before now: an exit the executor has yet to report may close an
    allocation a little in the past."""

    def __init__(self, store: JobStore, fleet: Fleet) -> None:
        self.store = store
        self.fleet = fleet
        # Until the first pass has read the store, ingest attributes no energy.
        fleet.attributor.book = AllocationBook(complete_to=float("-inf"))
        self._version, self._rebuild_at = -1, 0.0

    def publish(self, now: float) -> None:
        # Rebuilt when allocations changed (or to forget old ones), else only moved forward in time:
        # reading a day of allocations every pass is what a large fleet cannot afford.
        version = self.store.write_count("allocations")
        if version != self._version or now >= self._rebuild_at:
            allocations = self.store.allocations_since(now - BOOK_HORIZON_S)
            self.fleet.attributor.book = AllocationBook(allocations, complete_to=now - BOOK_MARGIN_S)
            self._version, self._rebuild_at = version, now + BOOK_REBUILD_S
        else:
            self.fleet.attributor.book = self.fleet.attributor.book.final_to(now - BOOK_MARGIN_S)


class ShortfallRecorder:
    """Reserved GPUs the fleet could not deliver since the last step, for SLA credits.
    A gap longer than MAX_SHORTFALL_STEP_S (the scheduler was down) is not guessed at."""

    def __init__(self, shortfalls: ShortfallStore | None) -> None:
        self.shortfalls = shortfalls
        self._last_step_at: float | None = None

    def record(self, policy_input: PolicyInput, missing: dict[str, int], now: float) -> None:
        last, self._last_step_at = self._last_step_at, now
        if self.shortfalls is None or last is None or not 0 < now - last <= MAX_SHORTFALL_STEP_S or not missing:
            return
        tenants = {c.contract_id: c.tenant for c in policy_input.contracts}
        rows = []
        for a, b in hour_pieces(last, now):
            rows += [
                ContractShortfall(cid, tenants[cid], hour_of(a), round(gpus * (b - a) * 1000))
                for cid, gpus in missing.items()
            ]
        self.shortfalls.add(rows)
        logger.warning(
            "reserved capacity not delivered: %s", ", ".join(f"{c} short {n} GPUs" for c, n in missing.items())
        )
