"""UsageService over real gRPC on loopback, through the CLI: a tenant reads its own
usage and invoice, never another's; operators name the tenant; `--db` on the
scheduler host gives the same invoice."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from neocloud.cli import main
from neocloud.scheduler.metering.usage import usage_id
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store.records import Role

RATECARD = Path(__file__).resolve().parents[2] / "deploy" / "config" / "ratecard.example.yaml"
HOUR = 1_793_491_200 + 5 * 86_400  # 2026-11-06T00:00Z
PERIOD = "2026-11"


def cli(*words: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(list(words))
    return int(done.value.code or 0), out.getvalue(), err.getvalue()


@pytest.fixture
def site(scheduler_factory: Callable[..., BackgroundScheduler], tmp_path: Path) -> tuple[BackgroundScheduler, dict]:  # type: ignore[type-arg]
    sched = scheduler_factory(rate_card_path=str(RATECARD))
    store = sched.scheduler.jobs
    for tenant in ("acme", "beta"):
        store.create_tenant(tenant)
    tokens = {
        "operator": store.create_token(Role.OPERATOR, "op"),
        "acme": store.create_token(Role.TENANT, "acme-ci", tenant="acme"),
    }
    rows = []
    for tenant, job, hours in (("acme", "j-a1", 3), ("acme", "j-a2", 1), ("beta", "j-b1", 2)):
        for h in range(hours):
            hour = HOUR + h * 3600
            alloc = f"a-{job}"
            rows.append((usage_id(alloc, "NVIDIA H200", hour), tenant, job, alloc, "NVIDIA H200", "spot", None,
                         hour, 8 * 3_600_000, 8 * 2_000_000_000, 8 * 2_700_000, 650_000, 1 << 36))  # fmt: skip
    with sqlite3.connect(sched.scheduler.config.db_path) as db:
        db.executemany(
            "INSERT INTO usage (usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id, hour,"
            " gpu_ms, energy_mj, util_gpu_ms, peak_power_mw, memory_peak_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?)",
            rows,
        )
    return sched, tokens


def connection(sched: BackgroundScheduler, token: str) -> list[str]:
    return ["--server", f"127.0.0.1:{sched.port}", "--insecure", "--token", token]


def test_a_tenant_reads_its_own_usage_and_invoice_and_nothing_else(site: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = site
    acme = connection(sched, tokens["acme"])
    code, out, _ = cli("usage", "--period", PERIOD, "--by", "job", "--json", *acme)
    assert code == 0
    report = json.loads(out)
    assert report["job"] == [
        {"job": "j-a1", "gpu_hours": 24.0, "energy_kwh": 13.333333, "utilised_gpu_hours": 18.0, "cost": "33.60"},
        {"job": "j-a2", "gpu_hours": 8.0, "energy_kwh": 4.444444, "utilised_gpu_hours": 6.0, "cost": "11.20"},
    ]  # 24 and 8 spot GPU-h x 1.40
    assert (report["currency"], report["unpriced"]) == ("USD", None)
    code, out, _ = cli("invoice", "--period", PERIOD, "--json", *acme)
    invoice = json.loads(out)
    assert code == 0 and invoice["tenant"] == "acme"
    amounts = {line["description"]: line["amount"] for line in invoice["lines"]}
    assert amounts["Spot NVIDIA H200 GPU-hours"] == "44.80"  # 32 GPU-h x 1.40
    # The same invoice, read on the scheduler host from the store.
    code, local, _ = cli("invoice", "--db", sched.scheduler.config.db_path, "--rate-card", str(RATECARD),
                         "--tenant", "acme", "--period", PERIOD, "--json")  # fmt: skip
    assert code == 0 and json.loads(local) == invoice

    code, _, err = cli("usage", "--period", PERIOD, "--tenant", "beta", *acme)
    assert code != 0 and "PERMISSION_DENIED" in err and "acme" in err
    code, _, err = cli("invoice", "--period", "2026-13", *acme)
    assert code != 0 and "INVALID_ARGUMENT" in err


def test_operators_name_the_tenant(site: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]
    sched, tokens = site
    operator = connection(sched, tokens["operator"])
    code, out, _ = cli("usage", "--period", PERIOD, "--tenant", "beta", "--by", "day", "--json", *operator)
    assert code == 0 and json.loads(out) == {
        "day": [{"day": "2026-11-06", "gpu_hours": 16.0, "energy_kwh": 8.888889, "utilised_gpu_hours": 12.0}]
    }
    code, _, err = cli("usage", "--period", PERIOD, *operator)
    assert code != 0 and "INVALID_ARGUMENT" in err and "name the tenant" in err


def test_without_a_rate_card_usage_is_read_but_nothing_is_rated(
    scheduler_factory: Callable[..., BackgroundScheduler],
) -> None:
    sched = scheduler_factory()
    store = sched.scheduler.jobs
    store.create_tenant("acme")
    acme = connection(sched, store.create_token(Role.TENANT, "acme-ci", tenant="acme"))
    code, out, _ = cli("usage", "--period", PERIOD, *acme)
    assert code == 0 and "job: none" in out and "cost: not priced (the scheduler has no rate card" in out
    code, _, err = cli("invoice", "--period", PERIOD, *acme)
    assert code != 0 and "FAILED_PRECONDITION" in err and "--rate-card" in err
