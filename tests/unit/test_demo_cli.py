"""`neocloud demo` refuses bad options and scenarios before it starts anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.cli import main


def _demo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(["demo", *args])
    return int(done.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--nodes", "0"), "--nodes must be 1 to 32, not 0"),
        (("--nodes", "33"), "--nodes must be 1 to 32, not 33"),
        (("--minutes", "0"), "--minutes must be more than 0 and at most 10000, not 0"),
        (("--minutes", "nan"), "--minutes must be more than 0"),
        (("--speed", "-2"), "--speed must be more than 0 and at most 600, not -2"),
        (("--speed", "inf"), "--speed must be more than 0"),
        (("--scenario", "/nonexistent/demo.yaml"), "/nonexistent/demo.yaml: cannot read: No such file or directory"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, err = _demo(capsys, *args)
    assert code == 2 and expected in err and err.startswith("neocloud demo: ")


def test_a_hostile_scenario_is_refused_with_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("internal:\n  - {at: 0, gpus: 8}\njobs:\n  - {at: 1, tenant: nobody, class: spot, gpus: 8}\n")
    code, err = _demo(capsys, "--scenario", str(bad))
    assert code == 2 and f"{bad} line 4: jobs[0].tenant: unknown tenant 'nobody'" in err


def test_a_scenario_too_big_for_the_fleet_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("internal:\n  - {at: 0, gpus: 24}\n")
    code, err = _demo(capsys, "--nodes", "2", "--scenario", str(big))
    assert code == 2 and "line 2: internal demand 24 GPUs exceeds the fleet's 16 GPUs (more --nodes?)" in err


def test_work_dir_must_be_empty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "old.db").write_text("x")
    code, err = _demo(capsys, "--work-dir", str(tmp_path))
    assert code == 2 and "must be an empty directory" in err
