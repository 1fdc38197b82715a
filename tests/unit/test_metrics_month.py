"""Month-to-date usage for Prometheus: kept from the hours each ledger pass meters (no
re-summing of the whole usage table), this UTC month only, never lowered by re-metering an
hour with the same or more data; and the tenant label as a name, a hash or nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from neocloud.cli.metrics_options import TENANT_LABEL_MODES as CLI_MODES
from neocloud.scheduler.billing.ratecard import parse_ratecard
from neocloud.scheduler.billing_runner import BillingRunner
from neocloud.scheduler.metering.book import AllocationBook
from neocloud.scheduler.metering.month import MonthToDate, month_bounds
from neocloud.scheduler.metrics import TENANT_LABEL_MODES, MeteringCollector, TenantLabels
from neocloud.scheduler.metrics_http import MetricsServer, read_token
from tests.unit.test_billing_runner import CARD
from tests.unit.test_ledger import HOUR, batch, ingest, open_site, start_job


def scrape(runner: BillingRunner, fleet: object, mode: TenantLabels = "name") -> dict[str, list[tuple[dict, float]]]:
    registry = CollectorRegistry()
    registry.register(MeteringCollector(runner, fleet, mode))  # type: ignore[arg-type]
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        out[f"{family.type} {family.name}"] = [(s.labels, s.value) for s in family.samples]
    return out


def test_re_metering_an_hour_never_lowers_the_month_and_matches_a_recount(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    store, db, fleet = open_site(path)
    start_job(store, "one", ("GPU-a", "GPU-b"), HOUR)
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 600)])
    runner = BillingRunner(path, clock=lambda: HOUR + 1800)
    runner.run_once()
    before = runner.summary
    statements: list[str] = []
    runner._db.set_trace_callback(statements.append)
    ingest(db, fleet, [batch(2, HOUR + 600, 600)])  # late energy: the hour is metered again
    runner.run_once()
    runner._db.set_trace_callback(None)
    after = runner.summary
    assert after.energy_joules[("acme", "spot")] > before.energy_joules[("acme", "spot")]
    for key, seconds in before.gpu_seconds.items():
        assert after.gpu_seconds[key] >= seconds, key
    # Incremental: the second pass read no month of usage back; its figures equal a recount.
    assert not [s for s in statements if "GROUP BY hour, tenant" in s]
    recount = MonthToDate(db)
    recount.update([], HOUR + 1800)
    assert recount.totals() == (after.gpu_seconds, after.energy_joules)
    runner.close()


def test_the_month_figures_hold_this_month_only_as_gauges(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    _, db, fleet = open_site(path)
    fleet.attributor.book = AllocationBook()
    last_month = month_bounds(HOUR)[0] - 3600
    db.execute(  # a row metered last month: it stays in the ledger, not in this month's figures
        "INSERT INTO usage (usage_id, hour, tenant, job_id, allocation_id, gpu_model, job_class, gpu_ms, energy_mj)"
        " VALUES ('old', ?, 'acme', 'j', 'a', 'H200', 'spot', 3600000, 5)",
        (last_month,),
    )
    db.commit()
    ingest(db, fleet, [batch(1, HOUR, 600)])
    runner = BillingRunner(path, clock=lambda: HOUR + 1800)
    runner.run_once()
    assert ("acme", "spot") not in runner.summary.gpu_seconds
    assert runner.summary.gpu_seconds[("", "idle")] == 2 * 1800
    page = scrape(runner, fleet)
    assert "gauge neocloud_tenant_month_gpu_seconds" in page and "gauge neocloud_tenant_month_energy_joules" in page
    assert not [name for name in page if "neocloud_tenant_gpu_seconds" in name]
    runner.close()


def test_tenant_labels_name_hash_or_off(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    store, db, fleet = open_site(path)
    job = start_job(store, "one", ("GPU-a", "GPU-b"), HOUR)
    store.close_allocations(job, HOUR + 900, "succeeded")
    fleet.attributor.book = AllocationBook(store.allocations_since(0))
    ingest(db, fleet, [batch(1, HOUR, 1200)])
    runner = BillingRunner(path, clock=lambda: HOUR + 1800, card=parse_ratecard(CARD))
    runner.run_once()
    digest = hashlib.sha256(b"acme").hexdigest()[:16]
    for mode, shown in (("name", "acme"), ("hash", digest), ("off", "")):
        page = scrape(runner, fleet, mode)  # type: ignore[arg-type]
        seconds = {labels["tenant"] for labels, _ in page["gauge neocloud_tenant_month_gpu_seconds"]}
        billed = {labels["tenant"] for labels, _ in page["gauge neocloud_tenant_billed_amount"]}
        assert seconds == {shown, ""} and billed == {shown}, (mode, seconds, billed)  # "": idle
        assert "acme" not in str(page) or mode == "name"
        spot = [v for labels, v in page["gauge neocloud_tenant_month_gpu_seconds"] if labels["class"] == "spot"]
        assert spot == [2 * 900], mode  # off sums over tenants: one tenant here, the same figure
    assert CLI_MODES == TENANT_LABEL_MODES
    runner.close()


def test_a_token_file_holds_one_long_enough_token(tmp_path: Path) -> None:
    good, short = tmp_path / "good", tmp_path / "short"
    good.write_text("0123456789abcdef-token\n")
    short.write_text("abc\n")
    assert read_token(str(good)) == b"0123456789abcdef-token"
    try:
        read_token(str(short))
    except ValueError as e:
        assert "16 to" in str(e)
    else:
        raise AssertionError("a 3-character token was accepted")


def test_a_missing_metrics_certificate_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    try:
        MetricsServer(CollectorRegistry(), "127.0.0.1", 0, missing, missing)
    except ValueError as e:
        assert missing in str(e)
    else:
        raise AssertionError("a missing certificate was accepted")
