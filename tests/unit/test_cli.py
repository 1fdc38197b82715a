from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neocloud.cli import build_parser, main

SUBCOMMANDS = [
    ["agent"],
    ["scheduler"],
    ["certs"],
    ["certs", "ca"],
    ["bench", "ingest"],
    ["bench", "agent"],
    ["bench", "schedule"],
    ["bench", "meter"],
    ["bench", "chaos"],
    ["bench", "sandbox"],
    ["invoice"],
    ["usage"],
    ["demo"],
    ["meter", "replay"],
    ["submit"],
    ["jobs"],
    ["admin", "contract", "create"],
]


@pytest.mark.parametrize("words", SUBCOMMANDS)
def test_every_subcommand_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: neocloud " + " ".join(words))
    assert len(out.splitlines()) > 5


def test_console_script_is_installed() -> None:
    done = subprocess.run([Path(sys.executable).with_name("neocloud"), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("neocloud ")


def test_agent_refuses_to_start_without_gpus_or_tls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "--backend", "sim", "--spool", str(tmp_path / "s.db"), "--metrics-port", "0"])
    assert exit_info.value.code == 2
    assert "mTLS needs --ca, --cert and --key" in caplog.text
    assert not (tmp_path / "s.db").exists()  # refused before writing anything


def test_auto_backend_without_nvml_says_what_to_do(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("pynvml")
    from neocloud.agent.gpu.types import BackendError
    from neocloud.agent.main import AgentConfig, make_backend

    try:
        make_backend(AgentConfig(node_id="n1", backend="auto")).close()
    except BackendError as e:
        assert "--backend sim" in str(e)
    else:
        pytest.skip("NVML works on this machine")


def test_scheduler_refuses_a_store_from_the_future(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sqlite3

    db = tmp_path / "s.db"
    sqlite3.connect(db).execute("PRAGMA user_version = 999").connection.close()
    with pytest.raises(SystemExit) as exit_info:
        main(
            # --ray-address embedded: the store is refused before Ray starts.
            ["scheduler", "--insecure", "--listen", "127.0.0.1:0", "--db", str(db), "--ray-address", "embedded"]
        )
    assert exit_info.value.code == 2
    assert "upgrade neocloud" in caplog.text


def test_bench_meter_closes_the_hour_it_built(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from neocloud.bench.meter import close_hour

    result = close_hour(nodes=50)
    # Every GPU either idles part of the hour or belongs to an allocation: at least one row each.
    assert result["gpus"] == 400 and result["ledger_rows"] >= result["allocations"]
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "meter", "--nodes", "20", "--tenants", "3"])
    assert exit_info.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tenants"] == 3 and printed["invoiced_usage_rows"] == 3 * 2 * 720
