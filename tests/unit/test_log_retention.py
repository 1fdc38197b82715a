"""A finished job's directory (logs, control files) is deleted on its node once it ended longer
than the retention ago (NEOCLOUD_LOG_RETENTION_S, default 7 days): a runner starting a rank
sweeps its siblings. A rank still running, or a directory no runner marked, is never touched.
Real runner, real processes; only the runner's Ray identity is supplied."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from neocloud.scheduler.executor import logfile
from neocloud.scheduler.executor import runner as runner_mod
from neocloud.scheduler.executor.runner import Runner
from neocloud.scheduler.executor.types import ExecJob

DAY = 24 * 3600.0


@pytest.fixture(autouse=True)
def ray_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_mod, "_ray_identity", lambda: ("ray-node", "127.0.0.1", []))
    monkeypatch.delenv(logfile.RETENTION_ENV, raising=False)


def run_to_end(log_dir: Path, job_id: str, script: str = "print('hi')") -> Runner:
    r = Runner(ExecJob(job_id, command=[sys.executable, "-c", script]), 0, 1, "node-a", [], str(log_dir))
    r.launch(("127.0.0.1", 0))
    st = r.status()
    deadline = time.monotonic() + 15
    while not st.ended and time.monotonic() < deadline:
        st = r.watch(st.version, 0.5)
    assert st.ended
    return r


def age(job_dir: Path, seconds: float) -> None:
    ended = job_dir / "control" / logfile.ended_marker(0)
    t = time.time() - seconds
    os.utime(ended, (t, t))


def test_a_finished_job_is_deleted_after_the_retention_and_nothing_else(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    run_to_end(logs, "old")
    control = logs / "old" / "control"
    assert (control / logfile.ended_marker(0)).is_file() and not (control / logfile.running_marker(0)).exists()
    run_to_end(logs, "recent")
    age(logs / "old", 8 * DAY)
    age(logs / "recent", 6 * DAY)
    running = Runner(
        ExecJob("running", command=[sys.executable, "-c", "import time; time.sleep(30)"]),
        0, 1, "node-a", [], str(logs),
    )  # fmt: skip
    running.launch(("127.0.0.1", 0))
    try:
        unmarked = logs / "unmarked"  # no runner's markers: not the sweep's to judge
        (unmarked / "control").mkdir(parents=True)
        (unmarked / "rank-0.log").write_text("x")
        # A job that swapped its control directory for one claiming it still runs is aged by its
        # directory's mtime instead (a link here stands for a directory another uid made).
        swapped = logs / "swapped"
        (swapped / "elsewhere").mkdir(parents=True)
        (swapped / "elsewhere" / logfile.running_marker(0)).write_text("")
        (swapped / "control").symlink_to("elsewhere")
        old = time.time() - 8 * DAY
        os.utime(swapped, (old, old))
        run_to_end(logs, "new")  # its launch sweeps
        assert sorted(p.name for p in logs.iterdir()) == ["new", "recent", "running", "unmarked"]
        # A rank still running keeps its directory however old its other markers are.
        assert logfile.sweep_expired(logs, 0.0, time.time() + 30 * DAY, keep="new") == ["recent"]
        assert (logs / "running").is_dir()
    finally:
        running.reap(5.0)


def test_the_retention_comes_from_the_node_and_a_bad_value_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert logfile.retention_s({}) == logfile.DEFAULT_RETENTION_S == 7 * DAY
    assert logfile.retention_s({logfile.RETENTION_ENV: "3600"}) == 3600.0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match=logfile.RETENTION_ENV):
            logfile.retention_s({logfile.RETENTION_ENV: bad})
    monkeypatch.setenv(logfile.RETENTION_ENV, "0")
    logs = tmp_path / "logs"
    run_to_end(logs, "first")
    age(logs / "first", 1.0)
    run_to_end(logs, "second")
    assert [p.name for p in logs.iterdir()] == ["second"]
