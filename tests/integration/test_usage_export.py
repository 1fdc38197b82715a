"""A tenant audits its bill itself, over real gRPC: it fetches the month's usage rows
(ExportUsage, streamed in pages), recomputes its invoice from them to the cent with the
README's rules alone, sees only its own rows, and reads each job's cost, which adds up
to the invoice's usage lines. The export it prints is byte for byte the operator's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from neocloud.scheduler.billing.export import PAGE_ROWS
from neocloud.scheduler.metering.usage import usage_id
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store.records import Role
from neocloud.v1 import usage_pb2 as pb
from neocloud.v1 import usage_pb2_grpc as pb_grpc
from tests.billing_reference import recompute_from_export
from tests.integration.test_usage_api import cli, connection

NOV_START = 1_793_491_200  # 2026-11-01T00:00Z
PERIOD = "2026-11"
H200 = "NVIDIA H200"
CARD = """\
currency: USD
billing_increment_s: 60
prices:
  internal: {"*": "1.60"}
  on_demand: {"NVIDIA H200": "3.50"}
  spot: {"NVIDIA H200": "1.40"}
energy_per_kwh: "0.10"
"""
PRICES = {"on_demand": Decimal("3.50"), "spot": Decimal("1.40"), "energy": Decimal("0.10")}
LONG_HOURS = 600  # two on-demand allocations of 600 hours: 1,200 rows, more than one page


def _row(
    tenant: str, job: str, cls: str, hour: int, gpu_ms: int, energy_mj: int, model: str = H200
) -> tuple[object, ...]:
    alloc = f"a-{job}"
    return (usage_id(alloc, model, hour), tenant, job, alloc, model, cls, None, hour, gpu_ms, energy_mj, 0, 0, 0)


def _insert(db_path: str, rows: list[tuple[object, ...]]) -> None:
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO usage (usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id, hour,"
            f" gpu_ms, energy_mj, util_gpu_ms, peak_power_mw, memory_peak_bytes) VALUES ({', '.join('?' * 13)})",
            rows,
        )


@pytest.fixture
def audited(scheduler_factory: Callable[..., BackgroundScheduler], tmp_path: Path) -> tuple[BackgroundScheduler, dict]:  # type: ignore[type-arg]
    card = tmp_path / "ratecard.yaml"
    card.write_text(CARD)
    sched = scheduler_factory(rate_card_path=str(card))
    store = sched.scheduler.jobs
    for tenant in ("acme", "beta"):
        store.create_tenant(tenant)
    tokens = {
        "operator": store.create_token(Role.OPERATOR, "op"),
        "acme": store.create_token(Role.TENANT, "acme-ci", tenant="acme"),
    }
    rows = []
    for job in ("j-long1", "j-long2"):  # whole hours less an odd number of ms: increments and cents matter
        for h in range(LONG_HOURS):
            rows.append(_row("acme", job, "on_demand", NOV_START + h * 3600, 2 * 3_600_000 - (h * 7919) % 100_000,
                             1_000_000_000 + h * 123_457))  # fmt: skip
    for job in ("j-s1", "j-s2", "j-s3"):  # a minute each: 0.0233 USD each, 0.07 together
        rows.append(_row("acme", job, "spot", NOV_START + 7200, 60_000, 1_000_000))
    rows.append(_row("acme", "j-oct", "spot", NOV_START - 3600, 3_600_000, 0))  # October: not this month's
    rows.append(_row("beta", "j-b1", "spot", NOV_START, 3_600_000, 5_000_000))
    _insert(sched.scheduler.config.db_path, rows)
    return sched, tokens


def test_a_tenant_recomputes_its_invoice_to_the_cent_from_the_api_export(
    audited: tuple[BackgroundScheduler, dict],
) -> None:  # type: ignore[type-arg]
    sched, tokens = audited
    acme = connection(sched, tokens["acme"])
    code, out, err = cli("usage", "--period", PERIOD, "--cloudevents", "dc1", *acme)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 2 * LONG_HOURS + 3
    assert {e["subject"] for e in events} == {"acme"}
    assert "rate card in force: file-" in err and "(USD)" in err

    code, inv_json, _ = cli("invoice", "--period", PERIOD, "--json", *acme)
    invoice = json.loads(inv_json)
    theirs = {f"{ln['kind']} {ln['job_class']}": Decimal(ln["amount"]) for ln in invoice["lines"]}
    mine = recompute_from_export(events, PRICES, 60)
    assert mine == theirs
    assert sum(mine.values()) == Decimal(invoice["total"]) > 0

    # The operator's export from the store prints the same lines, byte for byte.
    db = sched.scheduler.config.db_path
    code, local, _ = cli("usage", "--db", db, "--tenant", "acme", "--period", PERIOD, "--cloudevents", "dc1")
    assert code == 0 and local == out
    # --export alone: the same rows as plain JSON objects with their ids and integers.
    code, plain, _ = cli("usage", "--period", PERIOD, "--export", *acme)
    records = [json.loads(line) for line in plain.splitlines()]
    assert code == 0 and [r["usage_id"] for r in records] == [e["id"] for e in events]
    assert [r["gpu_ms"] for r in records] == [e["data"]["gpu_ms"] for e in events]
    assert cli("usage", "--db", db, "--tenant", "acme", "--period", PERIOD, "--export")[1] == plain


def test_the_export_is_paged_and_names_the_rate_card_in_force(audited: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = audited
    with grpc.insecure_channel(f"127.0.0.1:{sched.port}") as channel:
        stub = pb_grpc.UsageServiceStub(channel)
        meta = (("authorization", f"Bearer {tokens['acme']}"),)
        pages = list(stub.ExportUsage(pb.ExportUsageRequest(period=PERIOD), metadata=meta, timeout=30))
        assert [len(p.records) for p in pages] == [PAGE_ROWS, 2 * LONG_HOURS + 3 - PAGE_ROWS]
        assert pages[0].rate_version.startswith("file-") and pages[0].currency == "USD"
        assert not pages[1].rate_version
        hours = [r.hour for p in pages for r in p.records]
        assert hours == sorted(hours) and hours[0] >= NOV_START and hours[-1] < NOV_START + 30 * 86400
        empty = list(stub.ExportUsage(pb.ExportUsageRequest(period="2026-09"), metadata=meta, timeout=30))
        assert len(empty) == 1 and not empty[0].records and empty[0].currency == "USD"


def test_a_tenant_exports_its_own_rows_only(audited: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = audited
    acme, operator = connection(sched, tokens["acme"]), connection(sched, tokens["operator"])
    code, out, err = cli("usage", "--period", PERIOD, "--export", "--tenant", "beta", *acme)
    assert code != 0 and out == "" and "PERMISSION_DENIED" in err and "acme" in err
    code, out, _ = cli("usage", "--period", PERIOD, "--export", "--tenant", "beta", *operator)
    assert code == 0 and [json.loads(line)["job"] for line in out.splitlines()] == ["j-b1"]
    code, _, err = cli("usage", "--period", PERIOD, "--export", *operator)
    assert code != 0 and "INVALID_ARGUMENT" in err and "name the tenant" in err
    code, _, err = cli("usage", "--period", PERIOD, "--export", "--tenant", "nobody", *operator)
    assert code != 0 and "NOT_FOUND" in err
    code, _, err = cli("usage", "--period", "2026-13", "--export", *acme)
    assert code != 0 and "INVALID_ARGUMENT" in err
    assert cli("usage", "--export", *acme)[0] == 2  # a month per call: --period is needed


def test_per_job_costs_add_up_to_the_invoice_usage_lines(audited: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = audited
    acme = connection(sched, tokens["acme"])
    code, out, err = cli("usage", "--period", PERIOD, "--by", "job", "--json", *acme)
    assert code == 0, err
    report = json.loads(out)
    assert report["currency"] == "USD" and report["unpriced"] is None and report["rate_versions"][0].startswith("file-")
    costs = {g["job"]: Decimal(g["cost"]) for g in report["job"]}
    invoice = json.loads(cli("invoice", "--period", PERIOD, "--json", *acme)[1])
    usage = {ln["job_class"]: Decimal(ln["amount"]) for ln in invoice["lines"] if ln["kind"] == "usage"}
    assert costs["j-long1"] + costs["j-long2"] == usage["on_demand"]
    # Three minutes of spot are 0.07; each job's exact share is 0.0233: one of them carries the odd cent.
    assert sorted(costs[j] for j in ("j-s1", "j-s2", "j-s3")) == [Decimal("0.02"), Decimal("0.02"), Decimal("0.03")]
    assert sum(costs.values()) == sum(usage.values()) == usage["on_demand"] + Decimal("0.07")
    # The table says what the cost column holds and leaves out.
    code, table, _ = cli("usage", "--period", PERIOD, "--by", "job", *acme)
    assert code == 0 and "cost" in table.splitlines()[1] and "energy" in table.splitlines()[-1]


def test_get_usage_between_two_times_inside_one_month(audited: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = audited
    with grpc.insecure_channel(f"127.0.0.1:{sched.port}") as channel:
        stub = pb_grpc.UsageServiceStub(channel)
        meta = (("authorization", f"Bearer {tokens['acme']}"),)

        def usage(**fields: object) -> pb.GetUsageResponse:
            return stub.GetUsage(pb.GetUsageRequest(**fields), metadata=meta, timeout=30)  # type: ignore[arg-type]

        # The hours that start in [02:00, 03:00): the three spot jobs and an hour of each long job.
        reply = usage(since=NOV_START + 7200, until=NOV_START + 10800)
        assert sorted(g.key for g in reply.groups) == ["j-long1", "j-long2", "j-s1", "j-s2", "j-s3"]
        assert sum(Decimal(g.cost) for g in reply.groups if g.key.startswith("j-s")) == Decimal("0.07")
        for bad, why in (
            ({"period": PERIOD, "since": NOV_START, "until": NOV_START + 3600}, "not both"),
            ({"since": NOV_START}, "both since and until"),
            ({"since": NOV_START, "until": NOV_START + 31 * 86400}, "one calendar month"),
            ({"since": NOV_START + 3600, "until": NOV_START}, "since < until"),
            ({"since": float("nan"), "until": NOV_START}, "since < until"),
            ({"since": 0, "until": 1e300}, "since < until"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                usage(**bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in str(refused.value.details())


def test_usage_that_cannot_be_priced_is_still_shown_with_the_reason(audited: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = audited
    # A model the rate card has no on-demand price for.
    _insert(
        sched.scheduler.config.db_path, [_row("acme", "j-b200", "on_demand", NOV_START, 3_600_000, 0, "NVIDIA B200")]
    )
    code, out, err = cli("usage", "--period", PERIOD, "--by", "job", "--json", *connection(sched, tokens["acme"]))
    report = json.loads(out)
    assert code == 0, err
    assert "j-b200" in {g["job"] for g in report["job"]} and {g["cost"] for g in report["job"]} == {None}
    assert "no on_demand price for 'NVIDIA B200'" in report["unpriced"] and report["currency"] is None
    code, table, _ = cli("usage", "--period", PERIOD, "--by", "job", *connection(sched, tokens["acme"]))
    assert code == 0 and "None" not in table and table.splitlines()[-1].startswith("cost: not priced (")
