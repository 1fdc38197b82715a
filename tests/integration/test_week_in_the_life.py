"""A week in the life of a site (issue 12), on a simulated clock, in seconds of real time.

The story. A two-node, 16 x H200 site in January 2027; tenants acme (reserved, 8 GPUs under
contract acme-h200), globex (on-demand), initech (spot), hooli (on-demand) and the lab's own
research team (a tenant of class internal). Everything goes through what runs in production:
the API and the CLI on a real socket with real tokens, one SQLite store on disk, the real
controller and policy (on the in-memory executor, so no Ray), the agents' telemetry batches
through ingest, the ledger and the billing pass with its metrics (tests/simulated_site.py).

- Day 1 (Fri 15th, 08:00): the operator applies rate card v1 and creates acme's contract
  (its terms are in the card first). acme runs a 4-task array "prep" and a "train" job after
  it (--after-ok the array); globex's "etl" fails and its "report" (--after-ok etl) is cancelled.
- Day 2: initech's spot job runs until research's internal work preempts it; it is requeued
  and runs again when research is done. Day 3: initech's 40-second probe crosses an hour.
- Day 4: acme's node is cordoned for 6 hours: an SLA credit, capped. Rate card v2, dry run
  first: its before/after are what the invoices then say.
- Day 5: acme's contract ends. Day 6: hooli runs a job, then its data breaks (a usage row of a
  class no card prices): hooli alone fails to bill, counted under its name; everyone else's
  invoice is unchanged to the cent.
- Day 8: every healthy tenant's invoice, read by the tenant, equals the one it computes from
  its own usage export and the card's text (tests/billing_reference.py); the month-to-date
  gauges never went down, across the reload and the contract end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import yaml

from neocloud.scheduler.metering.month import month_bounds
from neocloud.scheduler.store.db import open_db
from neocloud.v1 import admin_pb2 as apb
from neocloud.v1 import jobs_pb2 as jpb
from tests.billing_reference import Term, invoice_lines, recompute_invoice
from tests.integration.test_job_api import rpc_error
from tests.simulated_site import DAY, H200, HOUR, Site

PERIOD = "2027-01"
CONTRACT = "acme-h200"
CARD_V1 = """\
currency: USD
billing_increment_s: 60
prices:
  internal: {"*": "1.65"}
  on_demand: {"NVIDIA H200": "3.50"}
  spot: {"NVIDIA H200": "1.40"}
energy_per_kwh: {internal: "0", reserved: "0.085", on_demand: "0.085", spot: "0.085"}
contracts:
  acme-h200:
    commitment_per_month: "12000.00"
    included_gpu_hours_per_month: 500
    overage_per_gpu_hour: "3.00"
    sla_credit_per_gpu_hour: "5.00"
    sla_credit_cap_pct: 10
"""
CARD_V2 = (
    CARD_V1.replace('"3.50"', '"3.70"').replace('"1.40"', '"1.25"').replace('on_demand: "0.085"', 'on_demand: "0.091"')
)
TENANTS = ("acme", "globex", "initech", "hooli")
TEAMS = ("research",)  # the lab's own: class internal, invoiced apart at the transfer price
HEALTHY = ("acme", "globex", "initech", "research")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path, TENANTS, PERIOD, TEAMS)
    s.rig.store.set_setting("internal_floor_gpus", "8")  # research may reclaim a node from spot work
    yield s
    s.stop()


def totals(site: Site, tenants: tuple[str, ...] = HEALTHY) -> dict[str, str]:
    return {t: site.invoice(t)["total"] for t in tenants}


def test_a_week_in_the_life(site: Site, tmp_path: Path) -> None:
    t0 = site.clock.now  # 2027-01-15T08:00Z
    period = month_bounds(t0)
    spot, on_demand, reserved, internal = (
        jpb.JOB_CLASS_SPOT, jpb.JOB_CLASS_ON_DEMAND, jpb.JOB_CLASS_RESERVED, jpb.JOB_CLASS_INTERNAL
    )  # fmt: skip

    # Day 1: the rate card, then the contract it prices.
    signed = apb.CreateContractRequest(
        contract_id=CONTRACT, tenant="acme", gpus=8, gpu_model=H200, start=t0, end=t0 + 60 * DAY
    )
    e = rpc_error(lambda: site.admin.CreateContract(signed, metadata=site.auth("ops"), timeout=10))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION  # no card prices it yet: terms first
    assert site.apply(CARD_V1).applied
    site.admin.CreateContract(signed, metadata=site.auth("ops"), timeout=10)
    e = rpc_error(lambda: site.submit("globex", on_demand, 4096))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION  # can never fit 16 GPUs: refused at the door

    prep = site.submit("acme", reserved, 2, array="0-3", name="prep", contract_id=CONTRACT, cpus=8)
    tasks = site.jobs.List(jpb.ListJobsRequest(array_job_id=prep.job_id), metadata=site.auth("acme"), timeout=10).jobs
    assert sorted(t.array_task_id for t in tasks) == [0, 1, 2, 3]
    train = site.submit("acme", reserved, 8, name="train", contract_id=CONTRACT, after_ok=[prep.job_id])
    etl = site.submit("globex", on_demand, 8, name="etl")
    report = site.submit("globex", on_demand, 8, name="report", after_ok=[etl.job_id])
    site.settle(etl.job_id, jpb.JOB_STATE_RUNNING)
    for t in tasks:
        assert site.get(t.job_id).state == jpb.JOB_STATE_RUNNING
        assert site.rig.executor.jobs[t.job_id].job.env["NEOCLOUD_ARRAY_TASK_ID"] == str(t.array_task_id)
    site.advance(3 * HOUR)
    site.exit(etl.job_id, 3)
    site.settle(report.job_id, jpb.JOB_STATE_CANCELLED)
    assert site.get(etl.job_id).state == jpb.JOB_STATE_FAILED
    assert site.get(report.job_id).message == f"dependency {etl.job_id} failed (after-ok)"
    site.advance(HOUR)
    for t in tasks:
        site.exit(t.job_id)
    site.settle(train.job_id, jpb.JOB_STATE_RUNNING)
    site.advance(12 * HOUR)
    site.bill()

    # Day 2: spot work, preempted by the lab's own, requeued, run again.
    batch = site.submit("initech", spot, 8, name="batch")
    site.settle(batch.job_id, jpb.JOB_STATE_RUNNING)
    site.advance(6 * HOUR)
    study = site.submit("research", internal, 8, name="study")
    site.settle(study.job_id, jpb.JOB_STATE_RUNNING, steps=10)
    assert site.rig.controller.stats.preemptions == 1
    assert site.get(batch.job_id).state == jpb.JOB_STATE_QUEUED and site.get(batch.job_id).requeues == 1
    site.advance(10 * HOUR)
    site.exit(study.job_id)
    site.settle(batch.job_id, jpb.JOB_STATE_RUNNING, steps=10)
    site.advance(DAY)
    site.exit(train.job_id)
    site.advance(8 * HOUR)
    site.exit(batch.job_id)
    site.settle(batch.job_id, jpb.JOB_STATE_SUCCEEDED)
    # A probe of ~40 s across an hour boundary: two ledger rows, one allocation, billed one increment.
    site.advance((site.clock.now // HOUR + 2) * HOUR - 20 - site.clock.now)
    probe = site.submit("initech", spot, 1, name="probe")
    site.settle(probe.job_id, jpb.JOB_STATE_RUNNING)
    site.advance(40)
    site.exit(probe.job_id)
    site.settle(probe.job_id, jpb.JOB_STATE_SUCCEEDED)
    serve = site.submit("globex", on_demand, 8, name="serve")
    site.settle(serve.job_id, jpb.JOB_STATE_RUNNING)
    site.advance(t0 + 3 * DAY - site.clock.now)
    site.bill()

    # Day 4: acme's node is cordoned for 6 hours (globex holds the other): 48 reserved GPU-hours
    # undelivered, a credit capped at 10% of the commitment for acme's days in the month.
    site.admin.CordonNode(apb.CordonNodeRequest(node_id="n1", reason="XID 79"), metadata=site.auth("ops"))
    site.advance(6 * HOUR, step=60)  # the controller's own pace: it records no shortfall over a longer gap
    site.admin.UncordonNode(apb.UncordonNodeRequest(node_id="n1"), metadata=site.auth("ops"))
    site.advance(1)
    site.bill()

    # Rate card v2, dry run first (`neocloud admin ratecard apply FILE --dry-run`); what it says
    # is what the invoices then say.
    before = totals(site)
    card_file = tmp_path / "ratecard-v2.yaml"
    card_file.write_text(CARD_V2, encoding="utf-8")
    dry = json.loads(site.cli("ops", "admin", "ratecard", "apply", str(card_file), "--dry-run", "--json"))
    assert not dry.get("applied") and dry["period"] == PERIOD
    changes = {c["tenant"]: (c["before"], c["after"]) for c in dry["changes"]}
    assert {t: b for t, (b, _) in changes.items()} == {t: before[t] for t in changes}
    assert set(changes) >= {"globex", "initech"}  # their prices move
    assert totals(site) == before  # a dry run changes nothing
    v2 = json.loads(site.cli("ops", "admin", "ratecard", "apply", str(card_file), "--json"))
    assert v2["applied"] and v2["version"]["version"] == dry["version"]["version"]
    after = totals(site)
    assert {t: after[t] for t in changes} == {t: a for t, (_, a) in changes.items()}
    assert {t: after[t] for t in set(HEALTHY) - set(changes)} == {t: before[t] for t in set(HEALTHY) - set(changes)}
    site.bill()
    site.advance(DAY)
    site.bill()

    # Day 5: acme's contract ends; its past stays billable.
    ended = site.admin.EndContract(apb.EndContractRequest(contract_id=CONTRACT), metadata=site.auth("ops"))
    assert ended.end == site.clock.now
    site.advance(DAY)
    site.bill()

    # Day 6: hooli runs, then its data breaks; it fails alone, counted under its name.
    site.exit(serve.job_id)
    site.settle(serve.job_id, jpb.JOB_STATE_SUCCEEDED)
    hooli = site.submit("hooli", on_demand, 8, name="sweep")
    site.settle(hooli.job_id, jpb.JOB_STATE_RUNNING)
    site.advance(2 * HOUR)
    site.exit(hooli.job_id)
    site.settle(hooli.job_id, jpb.JOB_STATE_SUCCEEDED)
    site.bill()
    healthy = {t: site.invoice(t) for t in HEALTHY}
    assert site.invoice("hooli")["total"] != "0.00"
    with closing(open_db(site.db_path)) as db:  # what a bad migration or a hand edit leaves: a class no card prices
        db.execute(
            "INSERT INTO usage (usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id, hour,"
            " gpu_ms, energy_mj, util_gpu_ms, peak_power_mw, memory_peak_bytes)"
            " VALUES ('broken', 'hooli', 'j-x', 'a-x', ?, 'platinum', NULL, ?, 1000, 0, 0, 0, 0)",
            (H200, period[0]),
        )
    site.bill()
    assert {t: site.invoice(t) for t in HEALTHY} == healthy  # to the cent, line by line
    e = rpc_error(lambda: site.invoice("hooli"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "platinum" in (e.details() or "")
    site.advance(DAY)
    site.bill()
    assert site.runner.summary.billing_errors == {("hooli", "bad_usage"): 2}

    # Day 8: every healthy invoice is what its tenant computes from its export and the card.
    site.advance(t0 + 7 * DAY - site.clock.now)
    site.bill()
    card = yaml.safe_load(CARD_V2)
    terms = {"acme": [Term(CONTRACT, 8, t0, ended.end)]}
    undelivered = {CONTRACT: 8 * 6 * HOUR * 1000}
    for tenant in HEALTHY:
        rows, version = site.export(tenant)
        invoice = site.invoice(tenant, tenant)
        assert invoice == site.invoice(tenant)  # the tenant reads what the operator reads
        assert {ln["rate_version"] for ln in invoice["lines"]} == {version} == {v2["version"]["version"]}
        expected = recompute_invoice(rows, card, terms.get(tenant, []), period, undelivered_ms=undelivered)
        assert invoice_lines(invoice) == expected, tenant
        assert Decimal(invoice["total"]) == sum(expected.values())
        # The tenant's own tools: `neocloud invoice` and `neocloud usage --by job` (each job's
        # cost, adding up to the invoice's GPU-time lines).
        assert json.loads(site.cli(tenant, "invoice", "--period", PERIOD, "--json")) == invoice
        jobs = json.loads(site.cli(tenant, "usage", "--period", PERIOD, "--by", "job", "--json"))["job"]
        usage_lines = [Decimal(ln["amount"]) for ln in invoice["lines"] if ln["kind"] == "usage"]
        assert sum(Decimal(j["cost"]) for j in jobs) == sum(usage_lines), tenant
    lines = invoice_lines(site.invoice("acme"))
    assert lines["overage acme-h200"] > 0 and lines["energy reserved"] > 0  # every rule took part
    assert lines["sla_credit acme-h200"] == -(lines["commitment acme-h200"] / 10).quantize(Decimal("0.01"))  # capped
    assert invoice_lines(site.invoice("initech"))["energy spot"] > 0
    assert invoice_lines(site.invoice("research"))["usage internal NVIDIA H200"] > 0  # the team's own, apart
    probed = [r["gpu_ms"] for r in site.export("initech")[0] if r["job_id"] == probe.job_id]
    assert len(probed) == 2 and sum(probed) < 60_000  # one increment; rounded per row it would be two

    # The month-to-date figures never went down, across the reload and the contract end; the
    # only billing errors ever exported are hooli's.
    month_to_date = ("neocloud_tenant_month_gpu_seconds", "neocloud_tenant_month_energy_joules")
    for earlier, later in zip(site.scrapes, site.scrapes[1:], strict=False):
        for key, value in earlier.items():
            if key[0] in month_to_date:
                assert later[key] >= value, (key, value, later[key])
    first, last = site.scrapes[0], site.scrapes[-1]
    for name in month_to_date:
        for tenant, cls in (("acme", "reserved"), ("initech", "spot"), ("hooli", "on_demand")):
            assert last[(name, (("class", cls), ("tenant", tenant)))] > 0
        globex = (name, (("class", "on_demand"), ("tenant", "globex")))
        assert last[globex] > first[globex] > 0  # it ran on day 1 and again on days 3 to 6
    errors = {k: v for k, v in last.items() if k[0] == "neocloud_billing_errors_total"}
    assert errors == {("neocloud_billing_errors_total", (("reason", "bad_usage"), ("tenant", "hooli"))): 3.0}
