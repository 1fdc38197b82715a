from __future__ import annotations

import dataclasses
import io
import json

import pytest

from neocloud.scheduler.billing.cloudevents import USAGE_EVENT_TYPE, rfc3339, usage_event, write_usage_events
from neocloud.scheduler.metering.usage import UsageRow
from tests.unit.billing.factories import H200, NOV_START, row

REQUIRED = ("specversion", "id", "source", "type")


def sample_row() -> UsageRow:
    r = row("alloc-1", "reserved", hour=5, gpu_ms=7_200_001, energy_mj=1_234_567_891, contract="c-gpu")
    return dataclasses.replace(r, util_gpu_ms=3_600_000, peak_power_mw=699_500)


def test_event_has_the_cloudevents_and_openmeter_shape() -> None:
    r = sample_row()
    event = usage_event(r, "dc1")
    assert all(event[k] for k in REQUIRED)
    assert event["specversion"] == "1.0"
    assert event["type"] == USAGE_EVENT_TYPE
    assert event["source"] == "neocloud/dc1"
    assert event["id"] == r.usage_id
    assert event["time"] == "2026-11-01T05:00:00Z"
    assert event["subject"] == "acme"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {
        "tenant": "acme",
        "job": "job-alloc-1",
        "allocation": "alloc-1",
        "class": "reserved",
        "model": H200,
        "contract": "c-gpu",
        "hour_start": "2026-11-01T05:00:00Z",
        "gpu_seconds": "7200.001",  # exact, from integer milliseconds
        "energy_joules": "1234567.891",
        "util_gpu_seconds": "3600.000",
        "peak_power_watts": "699.500",
        "memory_peak_bytes": 0,
        "gpu_ms": 7_200_001,
        "energy_mj": 1_234_567_891,
    }


def test_rfc3339_is_utc_with_z() -> None:
    assert rfc3339(NOV_START) == "2026-11-01T00:00:00Z"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"


def test_json_lines_skip_idle_and_are_deterministic() -> None:
    rows = [sample_row(), row("idle:g0", "idle", tenant=""), row("b", "spot", hour=1)]
    first, second = io.StringIO(), io.StringIO()
    assert write_usage_events(rows, first, "dc1") == 2
    write_usage_events(rows, second, "dc1")
    assert first.getvalue() == second.getvalue()
    lines = first.getvalue().splitlines()
    assert len(lines) == 2
    events = [json.loads(x, parse_float=lambda s: pytest.fail(f"float in event: {s}")) for x in lines]
    assert [e["id"] for e in events] == [rows[0].usage_id, rows[2].usage_id]
    assert events[1]["data"]["contract"] == ""


@pytest.mark.parametrize("site", ["", "a/b"])
def test_bad_site_is_refused(site: str) -> None:
    with pytest.raises(ValueError, match="site"):
        usage_event(sample_row(), site)


def test_idle_row_has_no_event() -> None:
    with pytest.raises(ValueError, match="idle"):
        usage_event(row("idle:g0", "idle", tenant=""), "dc1")
