"""`neocloud bench sandbox` at a tiny size: the shape of its JSON and figures that make sense (no
timing thresholds). On a node that cannot sandbox it must say what is missing, never make a figure up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from neocloud.bench.sandbox import read_cgroup_cpu_s, run
from neocloud.cli import main
from neocloud.scheduler.executor import sandbox

CAPS = sandbox.probe()


def bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "sandbox", *args])
    out, err = capsys.readouterr()
    assert isinstance(exit_info.value.code, int)
    return exit_info.value.code, out, err


def check_comparison(part: dict[str, Any], runs: int) -> None:
    """Both kinds measured `runs` times, positive, and the extra is the medians' difference."""
    assert len(part["sandboxed_all_s"]) == len(part["unsandboxed_all_s"]) == runs, part
    assert all(0 < v < 60 for v in (*part["sandboxed_all_s"], *part["unsandboxed_all_s"])), part
    assert part["extra_s"] == pytest.approx(part["sandboxed_s"] - part["unsandboxed_s"], abs=2e-4)


def check_skipped(result: dict[str, Any], missing: tuple[str, ...]) -> None:
    named = result["skipped"]
    assert all(m in named for m in missing)
    assert "rank_cpu" not in result and "setup_wall" not in result
    for part in result["ray"].values():  # internal jobs still run; the sandboxed figures are not made up
        assert part["skipped"] == named and "sandboxed_s" not in part and "extra_s" not in part
        assert len(part["unsandboxed_all_s"]) == result["runs"] and part["unsandboxed_s"] > 0


def test_bench_sandbox_measures_both_kinds_or_names_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = bench(capsys, "--runs", "2", "--seconds", "1")
    assert code == 0
    result = json.loads(out)
    assert result["benchmark"] == "sandbox" and result["runs"] == 2
    assert result["node"]["cgroup_version"] in ("v1", "v2")
    assert result["node"]["missing"] == list(CAPS.missing)
    assert len(result["probe_all_s"]) == 2 and result["probe_s"] > 0
    ray = result["ray"]
    if not CAPS.full:
        check_skipped(result, CAPS.missing)
        return
    assert "skipped" not in result
    for name in ("spawn_to_first_instruction", "setup_wall", "setup_runner_cpu", "rank_cpu"):
        check_comparison(result[name], 2)
    check_comparison(result["rank_cpu_sleep"], 1)
    assert result["rank_cpu_sleep"]["seconds"] == 1.0
    for name in ("cgroup_cpu", "cgroup_cpu_sleep"):
        assert "skipped" in result[name] or result[name]["sandboxed_s"] > 0
    for part in ray.values():  # one job of each kind on Ray
        check_comparison(part, 1)


@pytest.mark.parametrize("args", [["--runs", "1"], ["--runs", "1001"], ["--seconds", "0"], ["--seconds", "nan"]])
def test_bench_sandbox_refuses_sizes_it_cannot_measure(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = bench(capsys, *args)
    assert code == 2 and out == ""
    assert "--runs in [2, 1000]" in err and "Traceback" not in err


def test_cgroup_cpu_is_read_from_the_ranks_own_account(tmp_path: Path) -> None:
    v1 = sandbox.RankCgroup("job-0", "v1", tmp_path / "v1")
    v1.dirs["cpu"].mkdir(parents=True)
    assert read_cgroup_cpu_s(v1) is None  # cpuacct not mounted with cpu: no account, no figure
    (v1.dirs["cpu"] / "cpuacct.usage").write_text("25000000\n")
    assert read_cgroup_cpu_s(v1) == 0.025
    v2 = sandbox.RankCgroup("job-0", "v2", tmp_path / "v2")
    v2.dirs[""].mkdir(parents=True)
    (v2.dirs[""] / "cpu.stat").write_text("usage_usec 31000\nuser_usec 20000\nsystem_usec 11000\n")
    assert read_cgroup_cpu_s(v2) == 0.031


def test_a_node_that_cannot_sandbox_gets_skipped_parts_not_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ("bubblewrap (bwrap) namespaces", "uid switch (root and setpriv)")
    lacking = sandbox.Capabilities(bwrap=False, uid_switch=False, cgroup="v1", missing=missing)
    monkeypatch.setattr(sandbox, "probe", lambda: lacking)
    result = run(runs=2, seconds=1.0)
    assert result["node"]["bwrap"] is False and result["node"]["missing"] == list(missing)
    check_skipped(result, missing)
