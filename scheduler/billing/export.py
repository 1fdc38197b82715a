"""The usage export over the API: ledger rows as UsageRecords and back, so a tenant's
`neocloud usage --export` and the operator's `--db` export print the same rows
(cloudevents.write_usage_events) from the same values."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from neocloud.scheduler.billing.invoice import Period
from neocloud.scheduler.metering.usage import UsageRow
from neocloud.v1 import usage_pb2 as pb

logger = logging.getLogger(__name__)

PAGE_ROWS = 1000  # rows per UsagePage: ~150 KB on the wire, well under gRPC's 4 MiB message limit
READ_S = 86_400  # the ledger is read a UTC day at a time: what the server holds in memory per call


def to_record(row: UsageRow) -> pb.UsageRecord:
    return pb.UsageRecord(
        usage_id=row.usage_id,
        tenant=row.tenant,
        job_id=row.job_id,
        allocation_id=row.allocation_id,
        gpu_model=row.gpu_model,
        job_class=row.job_class,
        contract_id=row.contract_id or "",
        hour=row.hour,
        gpu_ms=row.gpu_ms,
        energy_mj=row.energy_mj,
        util_gpu_ms=row.util_gpu_ms,
        peak_power_mw=row.peak_power_mw,
        memory_peak_bytes=row.memory_peak_bytes,
    )


def from_record(record: pb.UsageRecord) -> UsageRow:
    return UsageRow(
        usage_id=record.usage_id,
        tenant=record.tenant,
        job_id=record.job_id,
        allocation_id=record.allocation_id,
        gpu_model=record.gpu_model,
        job_class=record.job_class,
        contract_id=record.contract_id or None,
        hour=record.hour,
        gpu_ms=record.gpu_ms,
        energy_mj=record.energy_mj,
        util_gpu_ms=record.util_gpu_ms,
        peak_power_mw=record.peak_power_mw,
        memory_peak_bytes=record.memory_peak_bytes,
    )


def windows(p: Period) -> Iterator[tuple[int, int]]:
    """[start, end) windows of READ_S seconds that cover the period, in order."""
    for start in range(p.start, p.end, READ_S):
        yield start, min(start + READ_S, p.end)
