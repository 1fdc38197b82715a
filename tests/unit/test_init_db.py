"""No silent new site: `neocloud scheduler` refuses a --db that does not exist unless
--init is given (exit 2, the absolute path and the flag named, nothing created);
--init creates it and starts; --init on an existing store keeps what it holds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neocloud.cli.main import main
from neocloud.scheduler.server import BackgroundScheduler, Scheduler, SchedulerConfig
from neocloud.scheduler.store import JobStore, open_db
from neocloud.scheduler.store.db import StoreMissingError


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0)


def test_a_missing_store_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    # A relative, mistyped path: the message names the absolute one. --ray-address embedded:
    # the store is refused before Ray (or anything else) starts.
    argv = [sys.executable, "-m", "neocloud", "scheduler", "--insecure", "--listen", "127.0.0.1:0"]
    argv += ["--db", "var/schedular.db", "--ray-address", "embedded", "--metrics-port", "0"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"no store at {tmp_path / 'var' / 'schedular.db'}" in done.stderr and "--init" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_embedded_scheduler_without_init_creates_nothing(tmp_path: Path) -> None:
    config = SchedulerConfig(listen="127.0.0.1:0", db_path=str(tmp_path / "new" / "s.db"), insecure=True)
    with pytest.raises(StoreMissingError, match=str(tmp_path / "new" / "s.db")):
        Scheduler(config)
    assert list(tmp_path.iterdir()) == []


def test_init_creates_the_store_and_starts(tmp_path: Path) -> None:
    db = tmp_path / "site" / "scheduler.db"
    argv = [sys.executable, "-m", "neocloud", "scheduler", "--insecure", "--listen", "127.0.0.1:0"]
    argv += ["--db", str(db), "--ray-address", "none", "--metrics-port", "0", "--init"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (db.with_name("operator-token").exists() and proc.poll() is None):
            assert proc.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # it serves (a refusal would have exited by now)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "scheduler listening" in err
    assert int(open_db(db, create=False).execute("PRAGMA user_version").fetchone()[0]) >= 4


def test_init_on_an_existing_store_keeps_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "scheduler.db"
    assert run_cli("scheduler", "--db", str(db), "--init-only") == 0
    first = capsys.readouterr().out
    assert f"store ready at {db}; operator token in {db.with_name('operator-token')}" in first
    token = db.with_name("operator-token").read_text()
    store = JobStore(open_db(db, create=False))
    store.create_tenant("acme")
    store.close()
    assert run_cli("scheduler", "--db", str(db), "--init-only") == 0
    assert capsys.readouterr().out.strip() == f"store ready at {db}"  # no second token
    assert db.with_name("operator-token").read_text() == token
    # An embedded scheduler told to init an existing store opens it as it is.
    config = SchedulerConfig(listen="127.0.0.1:0", db_path=str(db), metrics_port=None, insecure=True, init=True)
    sched = BackgroundScheduler(config)
    try:
        assert [t.name for t in sched.scheduler.jobs.list_tenants()] == ["acme"]
        assert sched.scheduler.bootstrap_token_file is None
    finally:
        sched.stop()
