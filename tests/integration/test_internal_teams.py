"""Internal teams as tenants of class internal (issue 12 item 10): `admin tenant create
vision-team --internal`, a tenant token for it submits class internal work that is the
team's in the ledger, the usage and the fleet split (internal, per team), while the
policy treats every team's work as the lab's one internal capacity."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import grpc
import pytest

from neocloud.cli import main
from neocloud.cli.main import build_parser
from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Preemption
from neocloud.v1 import jobs_pb2 as pb
from tests.api_server import ApiServer
from tests.integration.test_job_api import rpc_error, submit
from tests.unit.billing.factories import HOUR_MS, KWH_MJ, NOV, row
from tests.unit.billing.store import open_store, put_rows
from tests.unit.policy.factories import INTERNAL, ON_DEMAND, SPOT, fleet, job, policy_input, running

CARD = """\
currency: USD
prices:
  internal: {"*": "1.60"}
  on_demand: {"NVIDIA H200": "3.50"}
  spot: {"NVIDIA H200": "1.40"}
"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


def operator_cli(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    monkeypatch.setenv("NEOCLOUD_SERVER", api.address)
    monkeypatch.setenv("NEOCLOUD_TOKEN", api.tokens["operator"])

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        args = build_parser().parse_args([*argv[:3], "--insecure", *argv[3:]])
        code = args.func(args)
        return code, capsys.readouterr().out

    return run


def test_an_internal_team_submits_class_internal_under_its_own_name(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = operator_cli(api, monkeypatch, capsys)
    assert run("admin", "tenant", "create", "vision-team", "--internal") == (0, "internal team vision-team created\n")
    out = run("admin", "tenant", "list")[1]
    classes = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]}
    assert classes == {"acme": "tenant", "globex": "tenant", "vision-team": "internal"}
    code, out = run("admin", "token", "create", "--role", "tenant", "--tenant", "vision-team", "--name", "vision-ci")
    assert code == 0
    api.tokens["vision"] = out.strip()

    job = submit(api, "vision", job_class=pb.JOB_CLASS_INTERNAL)
    assert (job.tenant, job.spec.job_class) == ("vision-team", pb.JOB_CLASS_INTERNAL)
    assert api.store.get(job.job_id).tenant == "vision-team"
    # An internal team buys no capacity, and an outside tenant gets no internal capacity.
    refused = rpc_error(lambda: submit(api, "vision", "r2", job_class=pb.JOB_CLASS_SPOT))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "vision-team is an internal team" in refused.details()
    refused = rpc_error(lambda: submit(api, "acme", "r3", job_class=pb.JOB_CLASS_INTERNAL))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    # The team sees its own jobs, not the lab-wide internal token's, and the other way round.
    lab = submit(api, "internal", "r4", job_class=pb.JOB_CLASS_INTERNAL)
    mine = api.jobs.List(pb.ListJobsRequest(), metadata=api.auth("vision")).jobs
    assert [j.job_id for j in mine] == [job.job_id]
    assert (
        rpc_error(lambda: api.jobs.Get(pb.GetJobRequest(job_id=lab.job_id), metadata=api.auth("vision"))).code()
        is grpc.StatusCode.NOT_FOUND
    )


def test_every_team_counts_toward_the_one_internal_floor() -> None:
    vision = running("vision-1", {"n0": 8}, cls=INTERNAL, tenant="vision-team")
    spot = running("sp", {"n1": 8}, cls=SPOT)
    speech = job("speech-1", 8, cls=INTERNAL, tenant="speech-team")
    # Below the floor (8 of 16 held, by another team): the speech team reclaims from spot.
    d = schedule(policy_input(fleet(2), [speech], [vision, spot], internal_floor_gpus=16))
    assert d.preemptions == (Preemption("sp", "internal work reclaims its floor", for_job_id="speech-1"),)
    # At the floor, held by the vision team: the speech team may not reclaim it again.
    held = [vision, spot, running("od", {"n2": 8}, cls=ON_DEMAND)]
    d = schedule(policy_input(fleet(3), [speech], held, internal_floor_gpus=8))
    assert all(p.reason != "internal work reclaims its floor" for p in d.preemptions)


def cli(*words: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(list(words))
    return int(done.value.code or 0), out.getvalue(), err.getvalue()


def test_the_fleet_split_and_invoices_report_each_team_apart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = open_store(path, ("acme", "vision-team", "speech-team"))
    db.execute("UPDATE tenants SET internal = 1 WHERE name IN ('vision-team', 'speech-team')")
    put_rows(
        db,
        [
            row("lab", "internal", tenant="internal", gpu_ms=HOUR_MS, energy_mj=KWH_MJ),
            row("v1", "internal", tenant="vision-team", gpu_ms=4 * HOUR_MS, energy_mj=3 * KWH_MJ),
            row("s1", "internal", tenant="speech-team", gpu_ms=2 * HOUR_MS, energy_mj=KWH_MJ),
            row("a1", "on_demand", tenant="acme", gpu_ms=3 * HOUR_MS, energy_mj=2 * KWH_MJ),
        ],
    )
    card = tmp_path / "card.yaml"
    card.write_text(CARD)
    local = ("--db", str(path), "--rate-card", str(card), "--period", NOV)
    code, out, err = cli("usage", *local, "--json")
    assert code == 0, err
    report = json.loads(out)
    sides = {s["side"]: s["gpu_hours"] for s in report["fleet"]}
    assert (sides["internal"], sides["tenants"]) == (7.0, 3.0)  # the policy's view: one internal side
    teams = {t["team"]: (t["gpu_hours"], t["energy_kwh"]) for t in report["internal_by_team"]}
    assert teams == {"internal": (1.0, 1.0), "speech-team": (2.0, 1.0), "vision-team": (4.0, 3.0)}
    # Each team's usage is rated at the internal (transfer) price, on its own invoice.
    code, out, err = cli("invoice", *local, "--tenant", "vision-team", "--json")
    assert code == 0, err
    assert json.loads(out)["total"] == "6.40"
