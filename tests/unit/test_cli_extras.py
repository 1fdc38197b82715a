"""The CLI without the extras: every command's --help works, and the daemons' commands say which
extra to install (exit 2). A child process hides the extras' modules, as a base install lacks them
(tests/integration/test_packaging.py checks the same on a real install of the wheel)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neocloud.cli.main import EXTRA_MODULES, missing_extra

HIDE_EXTRAS = f"""
import sys

class HideExtras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {sorted(EXTRA_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, HideExtras())
from neocloud.cli import main
main(sys.argv[1:])
"""


def neocloud_without_extras(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE_EXTRAS, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


@pytest.mark.parametrize("words", [["--help"], ["agent", "--help"], ["scheduler", "--help"], ["demo", "--help"]])
def test_help_needs_no_extra(tmp_path: Path, words: list[str]) -> None:
    done = neocloud_without_extras(tmp_path, *words)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: neocloud")


@pytest.mark.parametrize(
    ("words", "extra"),
    [
        (["scheduler", "--insecure", "--listen", "127.0.0.1:0", "--db", "s.db", "--ray-address", "none"], "scheduler"),
        (["agent", "--backend", "sim", "--insecure", "--spool", "a.db", "--metrics-port", "0"], "agent"),
        (["demo", "--nodes", "1"], "demo"),
        (["bench", "ingest", "--seconds", "1"], "demo"),
    ],
)
def test_a_daemon_without_its_extra_says_what_to_install(tmp_path: Path, words: list[str], extra: str) -> None:
    done = neocloud_without_extras(tmp_path, *words)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"neocloud {words[0]} needs the {extra} extra (")
    assert done.stderr.rstrip().endswith(f"pip install 'neocloud[{extra}]'")
    assert len(done.stderr.splitlines()) == 1, done.stderr  # one line, no traceback
    assert not list(tmp_path.iterdir()), "it stopped before writing anything"


def test_a_module_no_extra_installs_is_a_broken_install_not_a_missing_extra() -> None:
    assert missing_extra("scheduler", ModuleNotFoundError("No module named 'neocloud.x'", name="neocloud.x")) is None
    assert missing_extra("submit", ModuleNotFoundError("No module named 'ray'", name="ray")) is None
    assert missing_extra("agent", ModuleNotFoundError("No module named 'pynvml.x'", name="pynvml.x")) == (
        "neocloud agent needs the agent extra (pynvml is not installed): pip install 'neocloud[agent]'"
    )
