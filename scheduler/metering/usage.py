"""What metering hands to billing: the usage rows of the ledger (contract shortfalls,
which the controller records, are `store.records.ContractShortfall`).

A usage row is one (allocation, GPU model, hour) cell; idle GPU time is a row
too (tenant "", class "idle"), so a fleet's rows add up to its wall time and its
counter deltas. Quantities are integers (milliseconds, millijoules) so the
ledger is exact and the same window always reproduces the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

IDLE_CLASS = "idle"


@dataclass(frozen=True, slots=True)
class UsageRow:
    usage_id: str  # deterministic: see usage_id()
    tenant: str  # "" for idle
    job_id: str  # "" for idle
    allocation_id: str  # "" for idle; idle rows are per GPU: allocation_id is "idle:<uuid>"
    gpu_model: str
    job_class: str  # internal | reserved | on_demand | spot | idle
    contract_id: str | None  # the reserved contract the job ran under, if any
    hour: int  # Unix seconds of the UTC hour the row covers
    gpu_ms: int  # GPU-milliseconds (GPUs × time) inside the hour
    energy_mj: int  # millijoules from the energy counter, split at allocation boundaries
    util_gpu_ms: int = 0  # gpu_ms weighted by GPU utilisation (how well the time was used)
    peak_power_mw: int = 0
    memory_peak_bytes: int = 0


def usage_id(allocation_id: str, gpu_model: str, hour: int) -> str:
    """The same allocation, model and hour always give the same id, so writing a row
    again replaces it instead of counting it twice. Readable, so an auditor can
    tell from an id alone what it counts."""
    return f"{allocation_id}/{hour}/{gpu_model}"
