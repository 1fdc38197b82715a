"""`neocloud usage --since/--until`, sacct-style, through the UsageService over real
gRPC: per-job (with each job's cost) and per-day figures of the hours between two times,
their total, and the cost so far (the covered months' invoices), on the ledger rows of
test_usage_api."""

from __future__ import annotations

import json
from decimal import Decimal

from neocloud.scheduler.server import BackgroundScheduler
from tests.integration.test_usage_api import cli, connection, site  # noqa: F401 (site is a fixture)


def test_usage_between_two_times_with_total_and_cost(site: tuple[BackgroundScheduler, dict]) -> None:  # type: ignore[type-arg]  # noqa: F811
    sched, tokens = site
    acme = connection(sched, tokens["acme"])
    code, out, err = cli("usage", "--since", "2026-10-15", "--until", "2026-11-07T00:00Z", "--json", *acme)
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert (report["since"], report["until"]) == ("2026-10-15T00:00:00Z", "2026-11-07T00:00:00Z")
    assert report["job"] == [
        {"job": "j-a1", "gpu_hours": 24.0, "energy_kwh": 13.333333, "utilised_gpu_hours": 18.0, "cost": "33.60"},
        {"job": "j-a2", "gpu_hours": 8.0, "energy_kwh": 4.444444, "utilised_gpu_hours": 6.0, "cost": "11.20"},
    ]
    # The total is the sum of the rows shown (each rounded to 6 places by the server).
    assert report["total"] == {"gpu_hours": 32.0, "energy_kwh": 17.777777, "utilised_gpu_hours": 24.0, "cost": "44.80"}
    assert (report["currency"], report["unpriced"]) == ("USD", None)
    invoices = [json.loads(cli("invoice", "--period", p, "--json", *acme)[1]) for p in ("2026-10", "2026-11")]
    assert Decimal(report["cost_so_far"]["amount"]) == sum(Decimal(i["total"]) for i in invoices) > 0
    assert report["cost_so_far"]["currency"] == invoices[0]["currency"]

    # Rows by day are cut to the range: the usage is all on 2026-11-06.
    code, out, _ = cli("usage", "--by", "day", "--since", "2026-11-07", "--until", "2026-12-01", "--json", *acme)
    assert code == 0 and json.loads(out)["day"] == [] and json.loads(out)["total"]["gpu_hours"] == 0
    code, out, _ = cli("usage", "--by", "day", "--since", "2026-11-06", "--until", "2026-11-07", *acme)
    assert code == 0 and "2026-11-06" in out and "cost so far: " in out

    # Rows by job are cut to the range too, with their cost: only j-a1 ran in the hour from 01:00.
    code, out, _ = cli("usage", "--since", "2026-11-06T01:00Z", "--until", "2026-11-06T02:00Z", "--json", *acme)
    assert code == 0 and json.loads(out)["job"] == [
        {"job": "j-a1", "gpu_hours": 8.0, "energy_kwh": 4.444444, "utilised_gpu_hours": 6.0, "cost": "11.20"}
    ]

    assert cli("usage", "--period", "2026-11", "--since", "2026-11-01", *acme)[0] == 2
    code, _, err = cli("usage", "--since", "2026-11-07", "--until", "2026-11-01", *acme)
    assert code == 2 and "must be after --since" in err
