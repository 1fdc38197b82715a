"""`neocloud submit | jobs | job | cancel | logs | admin ...`: parsing, help,
and table / JSON output against a real JobService on loopback."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neocloud.cli import jobs as client_cli
from neocloud.scheduler.store.records import JobState
from tests.api_server import ApiServer

Run = Callable[..., tuple[int, str, str]]

SUBCOMMANDS = [
    ["submit"], ["jobs"], ["job"], ["cancel"], ["logs"], ["admin"],
    ["admin", "tenant"], ["admin", "tenant", "create"], ["admin", "tenant", "list"],
    ["admin", "token"], ["admin", "token", "create"], ["admin", "token", "list"], ["admin", "token", "revoke"],
    ["admin", "token", "rotate"],
    ["admin", "contract"], ["admin", "contract", "create"], ["admin", "contract", "list"],
    ["admin", "contract", "delete"], ["admin", "contract", "end"], ["admin", "ratecard"],
    ["admin", "ratecard", "apply"], ["admin", "ratecard", "list"], ["admin", "set"], ["admin", "settings"],
    ["admin", "cordon"],
    ["admin", "uncordon"], ["admin", "cordons"], ["admin", "node"], ["admin", "node", "move-gpu"], ["admin", "audit"],
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """What neocloud/cli.py builds, with only these subcommands."""
    parser = argparse.ArgumentParser(prog="neocloud")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    client_cli.add_parser(subparsers)
    return parser


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


@pytest.fixture
def run(api: ApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """run(who, *words, *options): the exit status, stdout and stderr of one command as `who`."""
    monkeypatch.setenv("NEOCLOUD_SERVER", api.address)

    def run(who: str, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setenv("NEOCLOUD_TOKEN", api.tokens[who])
        capsys.readouterr()
        args = build_parser().parse_args(list(argv))
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: neocloud " + " ".join(words))
    assert len(out.splitlines()) > 3


def test_submit_parses_the_command_after_the_separator() -> None:
    args = build_parser().parse_args(
        ["submit", "--gpus", "16", "--gpus-per-node", "8", "--class", "spot", "--env", "LR=3e-4", "--env", "X=a=b",
         "--", "python", "train.py", "--lr", "3", "--"]
    )  # fmt: skip
    assert (args.gpus, args.gpus_per_node, args.job_class) == (16, 8, "spot")
    assert args.cmd == ["python", "train.py", "--lr", "3", "--"]
    assert args.env == [("LR", "3e-4"), ("X", "a=b")]


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--env", "lower=1", "--", "x"],
        ["submit", "--env", "NOVALUE", "--", "x"],
        ["submit", "--class", "premium", "--", "x"],
        ["submit", "--gpus", "many", "--", "x"],
        ["jobs", "--state", "sleeping"],
        ["admin", "token", "create", "--role", "god", "--name", "x"],
        ["admin", "contract", "create", "--tenant", "a", "--gpus", "8", "--end", "next week"],
        ["admin", "contract", "create", "--tenant", "a", "--gpus", "8", "--power-w", "1", "--days", "1"],
        ["admin"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "usage: neocloud" in capsys.readouterr().err


def test_usage_the_server_never_sees_exits_2(
    run: Run, api: ApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run("acme", "submit", "--insecure", "--gpus", "8")
    assert code == 2 and "give a command after `--` or --entrypoint" in err
    code, _, err = run("acme", "submit", "--insecure", "--entrypoint", "a.b:c", "--", "python")
    assert code == 2
    code, _, err = run("acme", "jobs", "--server", "scheduler.example.com:7443", "--insecure")
    assert (code, err) == (
        2,
        "neocloud: --insecure is only allowed to a loopback scheduler, not 'scheduler.example.com'; use TLS (--ca)\n",
    )
    code, _, err = run("acme", "jobs", "--ca", "/nonexistent/ca.pem")
    assert code == 2 and err.startswith("neocloud: cannot read the CA certificate /nonexistent/ca.pem: ")
    code, _, err = run("acme", "jobs", "--cert", "/nonexistent/c.pem", "--key", "/nonexistent/k.pem")
    assert (code, err) == (2, "neocloud: a client certificate needs --ca, --cert and --key together\n")
    code, _, err = run("acme", "jobs", "--server", "scheduler")
    assert (code, err) == (2, "neocloud: --server: 'scheduler' is not HOST:PORT\n")
    monkeypatch.delenv("NEOCLOUD_TOKEN")
    args = build_parser().parse_args(["jobs", "--insecure"])
    assert args.func(args) == 2
    assert (
        capsys.readouterr().err
        == "neocloud: no API token: pass --token or set NEOCLOUD_TOKEN (an operator makes one)\n"
    )
    assert job_count(api) == 0


def job_count(api: ApiServer) -> int:
    return len(api.store.list_jobs())


def test_submit_jobs_job_cancel(run: Run, api: ApiServer) -> None:
    code, out, _ = run("acme", "submit", "--insecure", "--gpus", "8", "--env", "LR=0.1", "--request-id", "r1",
                       "--", "python", "train.py")  # fmt: skip
    assert code == 0
    job_id, state = out.split()
    assert job_id.startswith("j-") and state == "queued"
    assert run("acme", "submit", "--insecure", "--gpus", "8", "--env", "LR=0.1", "--request-id", "r1",
               "--", "python", "train.py")[1].split()[0] == job_id  # fmt: skip

    code, out, _ = run("acme", "jobs", "--insecure")
    header, row = out.splitlines()
    assert header.split() == ["JOB", "NAME", "TENANT", "CLASS", "GPUS", "STATE", "SUBMITTED", "REQUEUES", "MESSAGE"]
    assert row.split()[:6] == [job_id, "-", "acme", "on_demand", "8", "queued"]

    code, out, _ = run("acme", "jobs", "--insecure", "--json", "--state", "queued")
    [listed] = json.loads(out)
    assert listed["job_id"] == job_id and listed["state"] == "queued"  # the word the options take
    assert listed["spec"]["env"] == {"LR": "0.1"} and listed["spec"]["command"] == ["python", "train.py"]

    api.store.start(job_id, [("node-1", [f"GPU-{i}" for i in range(8)])])
    code, out, _ = run("acme", "job", "--insecure", job_id)
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
    assert fields["state"].strip() == "running" and fields["program"].strip() == "python train.py"
    assert "on node-1: GPU-0" in out

    code, out, _ = run("acme", "cancel", "--insecure", job_id)
    assert (code, out.strip()) == (0, f"{job_id} running (cancel requested)")
    code, out, _ = run("acme", "cancel", "--insecure", "--json", job_id)
    assert json.loads(out)["cancel_requested"] is True


def test_job_watch_prints_events_until_the_end(run: Run, api: ApiServer) -> None:
    job_id = run("acme", "submit", "--insecure", "--", "true")[1].split()[0]
    api.store.finish(job_id, JobState.FAILED, 3, "exit code 3")
    code, out, _ = run("acme", "job", "--insecure", "--watch", job_id)
    assert code == 1  # as the job ended (tests/integration/test_cli_job_outcome.py has every status)
    events = [line.split()[2] for line in out.splitlines() if line.startswith("20")]
    assert events == ["submitted", "failed"]


def test_grpc_errors_are_one_line_and_exit_1(run: Run) -> None:
    job_id = run("acme", "submit", "--insecure", "--", "true")[1].split()[0]
    code, out, err = run("globex", "job", "--insecure", job_id)
    assert (code, out) == (1, "")
    assert err == f"neocloud: NOT_FOUND: no job '{job_id}'\n"
    code, _, err = run("acme", "submit", "--insecure", "--gpus", "0", "--", "true")
    assert code == 1 and err.startswith("neocloud: INVALID_ARGUMENT: gpus")
    code, _, err = run("operator", "jobs", "--insecure")
    assert code == 1 and "all_tenants" in err
    code, _, err = run("acme", "admin", "tenant", "list", "--insecure")
    assert code == 1 and err.startswith("neocloud: PERMISSION_DENIED: ")


def test_logs(run: Run, api: ApiServer) -> None:
    job_id = run("acme", "submit", "--insecure", "--", "true")[1].split()[0]
    api.logs.append(job_id, b"epoch 1\n")
    code, out, _ = run("acme", "logs", "--insecure", job_id)
    assert (code, out) == (0, "epoch 1\n")
    api.logs.append(job_id, b"epoch 2\n")
    api.logs.close(job_id)
    code, out, _ = run("acme", "logs", "--insecure", "-f", "--offset", "8", job_id)
    assert (code, out) == (0, "epoch 2\n")


def test_operator_commands(run: Run, api: ApiServer, tmp_path: Path) -> None:
    assert run("operator", "admin", "tenant", "create", "--insecure", "initech", "--weight", "2")[0] == 0
    code, out, _ = run("operator", "admin", "tenant", "list", "--insecure")
    assert [line.split()[:2] for line in out.splitlines()] == [
        ["TENANT", "WEIGHT"], ["acme", "1"], ["globex", "1"], ["initech", "2"]
    ]  # fmt: skip

    code, out, err = run("operator", "admin", "token", "create", "--insecure", "--role", "tenant", "--tenant",
                         "initech", "--name", "initech-ci")  # fmt: skip
    token = out.strip()
    assert code == 0 and token.startswith("nct_") and "not shown again" in err
    assert api.store.authenticate(token) is not None
    code, out, _ = run("operator", "admin", "token", "list", "--insecure")
    assert "initech-ci" in out and token not in out
    assert run("operator", "admin", "token", "revoke", "--insecure", "initech-ci")[0] == 0
    assert api.store.authenticate(token) is None

    # The rate first, then the contract it prices (tests/integration/test_contract_lifecycle.py has the rest).
    card = tmp_path / "card.yaml"
    card.write_text(
        'prices: {internal: {"*": "1"}, on_demand: {"*": "3"}, spot: {"*": "1"}}\n'
        'contracts: {initech-h200: {commitment_per_month: "9", nominal_gpu_w: 700, overage_per_gpu_hour: "3",'
        ' sla_credit_per_gpu_hour: "3"}}'
    )
    code, out, _ = run("operator", "admin", "ratecard", "apply", "--insecure", str(card), "--dry-run")
    assert code == 0 and out.startswith("dry run: ") and api.store.ratecard_versions() == []
    code, out, _ = run("operator", "admin", "ratecard", "apply", "--insecure", str(card))
    assert code == 0 and out.startswith("rate card r1-")
    code, _, err = run("operator", "admin", "contract", "create", "--insecure", "--id", "initech-h200", "--tenant",
                       "initech", "--gpus", "64", "--gpu-model", "H200", "--start", "2030-01-01T00:00:00Z", "--days",
                       "30")  # fmt: skip
    assert code == 1 and "FAILED_PRECONDITION: the fleet has no GPU of model 'H200'" in err
    code, out, _ = run("operator", "admin", "contract", "create", "--insecure", "--id", "initech-h200", "--tenant",
                       "initech", "--power-w", "1e6", "--start", "2030-01-01T00:00:00Z", "--days", "30")  # fmt: skip
    contract_id = out.strip()
    assert code == 0 and contract_id == "initech-h200"
    record = api.store.get_contract(contract_id)
    assert (record.start, record.end - record.start, record.power_w) == (1893456000.0, 30 * 86400.0, 1e6)
    code, out, _ = run("operator", "admin", "contract", "list", "--insecure", "--json")
    assert [c["contract_id"] for c in json.loads(out)] == [contract_id]
    code, out, _ = run(
        "operator", "admin", "contract", "end", "--insecure", contract_id, "--at", "2030-01-02T00:00:00Z"
    )
    assert code == 0 and api.store.get_contract(contract_id).end == 1893456000.0 + 86400
    assert run("operator", "admin", "contract", "delete", "--insecure", contract_id)[0] == 0  # not started yet

    code, out, _ = run("operator", "admin", "set", "--insecure", "one_tenant_per_node", "no")
    assert (code, out.strip()) == (0, "one_tenant_per_node = false")
    code, _, err = run("operator", "admin", "set", "--insecure", "one_tenant_per_node", "perhaps")
    assert code == 1 and "INVALID_ARGUMENT" in err
    code, out, _ = run("operator", "admin", "settings", "--insecure")
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[1:]}
    assert rows["one_tenant_per_node"] == ["false", "set"] and rows["min_runtime_s"][1] == "default"

    code, _, err = run("operator", "admin", "cordon", "--insecure", "gpu-9", "--reason", "XID 79")
    assert code == 1 and "NOT_FOUND: no node 'gpu-9'" in err
    api.store._db.execute(
        "INSERT INTO nodes (node_id, agent_version, backend, stream_epoch, last_seq, first_seen_us, last_seen_us)"
        " VALUES ('gpu-9', '1', 'sim', 1, 0, 0, 0)"
    )
    assert run("operator", "admin", "cordon", "--insecure", "gpu-9", "--reason", "XID 79")[0] == 0
    code, out, _ = run("operator", "admin", "cordons", "--insecure", "--json")
    assert [(c["node_id"], c["reason"]) for c in json.loads(out)] == [("gpu-9", "XID 79")]
    assert run("operator", "admin", "uncordon", "--insecure", "gpu-9")[0] == 0
    assert api.store.cordoned() == frozenset()

    code, out, _ = run("operator", "jobs", "--insecure", "--all")
    assert code == 0 and out.splitlines()[0].startswith("JOB")


def test_a_tenant_lists_its_contracts(run: Run, api: ApiServer) -> None:
    contract = api.store.create_contract("acme", start=0.0, end=4e9, power_w=2e6)
    api.store.create_contract("globex", start=0.0, end=4e9, gpus=8)
    code, out, _ = run("acme", "admin", "contract", "list", "--insecure")
    assert code == 0 and len(out.splitlines()) == 2
    assert out.splitlines()[1].split()[:4] == [contract.contract_id, "acme", "2", "MW"]
