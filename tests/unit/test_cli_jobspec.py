"""`neocloud submit --name --cpus --memory --after-ok --array`, `jobs --name/--array`,
`job` and `cancel --array`, against a real JobService on loopback."""

from __future__ import annotations

import argparse
import json

import pytest

from neocloud.cli.jobspec import memory_bytes
from tests.api_server import ApiServer
from tests.unit.test_client_cli import Run, api, run  # noqa: F401 - the fixtures


def test_memory_sizes() -> None:
    assert memory_bytes("16GiB") == memory_bytes("16G") == memory_bytes("16 gib") == 16 * 2**30
    assert memory_bytes("500MB") == 500 * 10**6
    assert memory_bytes("1.5TiB") == 3 * 2**39
    assert memory_bytes("4096") == 4096
    for bad in ("16 parsecs", "GiB", "-1G", "99999999999TiB"):
        with pytest.raises(argparse.ArgumentTypeError):
            memory_bytes(bad)


def test_submit_an_array_with_resources_after_a_job_then_list_show_and_cancel(run: Run, api: ApiServer) -> None:  # noqa: F811
    code, out, _ = run("acme", "submit", "--insecure", "--name", "prep", "--ray", "--", "true")
    assert code == 0
    parent = out.split()[0]
    assert api.store.get(parent).spec.ray
    code, out, _ = run("acme", "submit", "--insecure", "--name", "sweep", "--array", "0-2", "--cpus", "8",
                       "--memory", "64GiB", "--after-ok", parent, "--", "python", "eval.py")  # fmt: skip
    assert code == 0
    first = out.split()[0]

    code, out, _ = run("acme", "jobs", "--insecure", "--array", first)
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["JOB", "NAME", "TENANT"]
    assert [r.split()[1] for r in rows] == ["sweep[0]", "sweep[1]", "sweep[2]"]
    assert rows[0].split()[0] == first
    code, out, _ = run("acme", "jobs", "--insecure", "--name", "prep")
    assert [r.split()[0] for r in out.splitlines()[1:]] == [parent]

    code, out, _ = run("acme", "job", "--insecure", first)
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}
    assert fields["name"] == "sweep"
    assert (fields["cpus"], fields["memory"]) == ("8 per node", "64 GiB per node")
    assert fields["after ok"] == parent
    assert fields["array"] == f"{first} task 0 (of 0-2)"
    assert fields["message"] == f"waiting for {parent} to succeed (after-ok)"
    assert fields["ray"] == "-"

    code, out, _ = run("acme", "cancel", "--insecure", "--array", "--json", first)
    assert json.loads(out)["job_id"] == first
    states = {j.state.value for j in api.store.list_jobs("acme", array_job_id=first)}
    assert states == {"cancelled"}
    assert api.store.get(parent).state.value == "queued"  # the array's cancellation leaves its parent alone


def test_bad_cli_values_are_usage_errors(run: Run) -> None:  # noqa: F811
    for argv in (["--cpus", "-1"], ["--cpus", "many"], ["--memory", "lots"]):
        with pytest.raises(SystemExit) as e:
            run("acme", "submit", "--insecure", *argv, "--", "true")
        assert e.value.code == 2
