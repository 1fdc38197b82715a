"""Usage rows as CloudEvents 1.0 (JSON), one per row, in the shape OpenMeter ingests.

OpenMeter reads structured-mode JSON events (POST /api/v1/events, content type
application/cloudevents+json, or a batch as application/cloudevents-batch+json):
`type` picks the meter, `subject` is the customer a meter aggregates by, and a
meter's `valueProperty` / `groupBy` are JSONPaths into `data`
(e.g. `$.gpu_seconds`, `$.model`). Its value may be a number or a string that
parses as one; quantities here are decimal strings made from the ledger's
integers (gpu_ms / 1000), so no float rounding enters on the way. Both the
integers and the derived strings are sent.

`id` is the row's usage_id, so re-exporting a row gives the same event and a
consumer that deduplicates on (source, id) counts it once. The flip side: a row
corrected after export keeps its id, and such a consumer drops the corrected
event; send corrections as invoice adjustments, not as re-sent usage.
Idle rows (no tenant) are skipped: a CloudEvent subject must not be empty.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from neocloud.scheduler.metering.usage import IDLE_CLASS, UsageRow

logger = logging.getLogger(__name__)

SPECVERSION = "1.0"
USAGE_EVENT_TYPE = "io.neocloud.gpu.usage"
CONTENT_TYPE = "application/json"


def rfc3339(unix_s: int) -> str:
    """2026-11-01T00:00:00Z: RFC 3339 in UTC, whole seconds (rows start on the hour)."""
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _thousandths(value: int) -> str:
    """An integer count of thousandths as an exact decimal string: 1500 -> "1.500"."""
    return str(Decimal(value).scaleb(-3))


def usage_data(row: UsageRow) -> dict[str, Any]:
    """What one row says, as the `data` of its CloudEvent: the ledger's integers and exact decimal strings."""
    return {
        "tenant": row.tenant,
        "job": row.job_id,
        "allocation": row.allocation_id,
        "class": row.job_class,
        "model": row.gpu_model,
        "contract": row.contract_id or "",
        "hour_start": rfc3339(row.hour),
        "gpu_seconds": _thousandths(row.gpu_ms),
        "energy_joules": _thousandths(row.energy_mj),
        "util_gpu_seconds": _thousandths(row.util_gpu_ms),
        "peak_power_watts": _thousandths(row.peak_power_mw),
        "memory_peak_bytes": row.memory_peak_bytes,
        "gpu_ms": row.gpu_ms,
        "energy_mj": row.energy_mj,
    }


def usage_event(row: UsageRow, site: str, *, event_type: str = USAGE_EVENT_TYPE) -> dict[str, Any]:
    """One row as a CloudEvent; the same row always gives the same event."""
    if not site or "/" in site:
        raise ValueError(f"site {site!r} must be a non-empty name without '/'")
    if not row.tenant or row.job_class == IDLE_CLASS:
        raise ValueError(f"usage row {row.usage_id} is idle: it has no subject to send")
    return {
        "specversion": SPECVERSION,
        "type": event_type,
        "source": f"neocloud/{site}",
        "id": row.usage_id,
        "time": rfc3339(row.hour),
        "subject": row.tenant,
        "datacontenttype": CONTENT_TYPE,
        "data": usage_data(row),
    }


def write_usage_events(
    rows: Iterable[UsageRow], stream: TextIO, site: str | None, *, event_type: str = USAGE_EVENT_TYPE
) -> int:
    """Write one JSON line per tenant row to `stream`: its CloudEvent, or with `site` None its
    data with its id ("usage_id"). Returns how many were written. The operator's export
    (--db) and a tenant's (over the API) both print through here."""
    written = skipped = 0
    for row in rows:
        if not row.tenant or row.job_class == IDLE_CLASS:
            skipped += 1
            continue
        out = usage_event(row, site, event_type=event_type) if site is not None else usage_record(row)
        stream.write(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
        written += 1
    logger.debug("wrote %d usage line(s), skipped %d idle row(s)", written, skipped)
    return written


def usage_record(row: UsageRow) -> dict[str, Any]:
    """A row as a plain JSON object: its id, then its data."""
    return {"usage_id": row.usage_id, **usage_data(row)}
