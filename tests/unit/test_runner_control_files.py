"""The runner's control files and watchdog, attacked by the job they serve.

The runner runs in this process (only its Ray identity is supplied: node id, IP,
no GPUs); the job is a real process group, signalled and watched for real. Each
attack job prepares itself, says "ready", and must still get its notice and SIGTERM
within the grace, exiting 0 from its SIGTERM handler.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.scheduler.executor import runner as runner_mod
from neocloud.scheduler.executor.rank import RankStatus
from neocloud.scheduler.executor.runner import Runner
from neocloud.scheduler.executor.types import END_PREEMPTED, END_WATCHDOG_FAILED, ExecJob

GRACE_S = 8.0
WAIT_S = 15.0

# Waits for SIGTERM, then prints the notice it was promised and exits 0.
_ON_TERM = """
import json, os, signal, sys, time
def term(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the runner signals the group and its members
    with open(os.environ["NEOCLOUD_PREEMPT_NOTICE_FILE"]) as f:
        print("notice", json.load(f)["reason"], flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
"""
_READY = """
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture(autouse=True)
def ray_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_mod, "_ray_identity", lambda: ("ray-node", "127.0.0.1", []))


@pytest.fixture
def runners() -> Iterator[list[Runner]]:
    made: list[Runner] = []
    yield made
    for r in made:
        r.reap(5.0)


def start(runners: list[Runner], tmp_path: Path, script: str, **env: str) -> Runner:
    job = ExecJob("j1", command=[sys.executable, "-c", script], env=dict(env), grace_s=GRACE_S)
    r = Runner(job, 0, 1, "node-a", [], str(tmp_path / "logs"))
    runners.append(r)
    r.launch(("127.0.0.1", 0))
    wait_log(r, "ready")
    return r


def wait_log(r: Runner, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        log = r.read_log(0, 1 << 20)[0].decode()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the log: {r.read_log(0, 1 << 20)[0].decode()!r}")


def wait_end(r: Runner) -> RankStatus:
    st = r.status()
    deadline = time.monotonic() + WAIT_S
    while not st.ended and time.monotonic() < deadline:
        st = r.watch(st.version, 0.5)
    assert st.ended, "the rank did not end"
    return st


def preempt_and_check(r: Runner) -> None:
    t0 = time.time()
    r.stop(END_PREEMPTED, GRACE_S)
    st = wait_end(r)
    assert "notice preempted" in wait_log(r, "notice preempted")
    assert (st.end_reason, st.exit_code) == (END_PREEMPTED, 0)  # its SIGTERM handler ran: not killed
    assert st.ended_at is not None and st.ended_at - t0 < GRACE_S


def test_a_directory_and_links_planted_in_the_job_dir_block_neither_notice_nor_sigterm(
    runners: list[Runner], tmp_path: Path
) -> None:
    attack = """
d = os.path.dirname(os.environ["NEOCLOUD_CHECKPOINT_FILE"])
for name in (".rank-0.preempt.tmp", "rank-0.preempt", ".rank-0.reclaim-warning.tmp"):
    os.mkdir(os.path.join(d, name))
os.symlink("/etc/passwd", os.path.join(d, "rank-0.reclaim-warning"))
for i in range(2000):  # fill the directory with names a temporary file might take
    open(os.path.join(d, f".rank-0.preempt.{i:016x}.tmp"), "w").close()
"""
    r = start(runners, tmp_path, _ON_TERM + attack + _READY)
    r.warn("reclaim soon")
    preempt_and_check(r)
    assert Path("/etc/passwd").read_text().startswith("root:")


def test_a_directory_at_the_notice_name_itself_still_lets_sigterm_through(
    runners: list[Runner], tmp_path: Path
) -> None:
    """The job here has the runner's uid (no sandbox): it can write the control directory.
    The notice cannot be written then, but the signal and the deadline still hold."""
    attack = """
notice = os.environ["NEOCLOUD_PREEMPT_NOTICE_FILE"]
os.mkdir(notice)
def term(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("term, notice is a dir:", os.path.isdir(notice), flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
"""
    r = start(runners, tmp_path, _ON_TERM + attack + _READY)
    t0 = time.time()
    r.stop(END_PREEMPTED, GRACE_S)
    st = wait_end(r)
    assert "term, notice is a dir: True" in wait_log(r, "term,")
    assert (st.end_reason, st.exit_code) == (END_PREEMPTED, 0)
    assert st.ended_at is not None and st.ended_at - t0 < GRACE_S


def test_a_job_of_another_uid_can_read_but_not_touch_the_control_dir(runners: list[Runner], tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to run the job as another uid (uid 65534)")
    # The job (uid 65534) must reach its files, as the sandbox's bind mount lets it (pytest's tmp is 0700).
    base = Path(tempfile.mkdtemp(prefix="neocloud-control-"))
    base.chmod(0o755)
    attack = """
import errno
notice = os.environ["NEOCLOUD_PREEMPT_NOTICE_FILE"]
d = os.path.dirname(notice)
print("can list the control dir:", "rank-0.running" in os.listdir(d), flush=True)
tries = {
    "mkdir notice": lambda: os.mkdir(notice),
    "create tmp": lambda: open(os.path.join(d, ".rank-0.preempt.x.tmp"), "w"),
    "symlink": lambda: os.symlink("/etc/shadow", notice),
    "rename dir": lambda: os.rename(d, d + ".old"),
}
for what, attempt in tries.items():
    try:
        attempt()
        print("ALLOWED", what, flush=True)
    except OSError as e:
        print("denied", what, errno.errorcode[e.errno], flush=True)
"""
    script = _ON_TERM + attack + _READY
    job = ExecJob(
        "j1", command=[setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script]
    )
    r = Runner(job, 0, 1, "node-a", [], str(base / "logs"))
    runners.append(r)
    try:
        r.launch(("127.0.0.1", 0))
        log = wait_log(r, "ready")
        assert "can list the control dir: True" in log
        assert "ALLOWED" not in log and log.count("denied") == 4, log
        preempt_and_check(r)
        control = base / "logs" / "j1" / "control"
        assert (control.stat().st_mode & 0o777, control.stat().st_uid) == (0o755, os.geteuid())
        notice = control / "rank-0.preempt"
        assert notice.stat().st_mode & 0o777 == 0o644
    finally:
        r.reap(5.0)
        shutil.rmtree(base)


def test_a_failing_watchdog_stops_the_rank_and_says_so(runners: list[Runner], tmp_path: Path) -> None:
    def broken(pgid: int) -> None:
        raise RuntimeError("watchdog broken by the test")

    ignore_term = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    job = ExecJob("j1", command=[sys.executable, "-c", ignore_term + _READY], grace_s=GRACE_S)
    r = Runner(job, 0, 1, "node-a", [], str(tmp_path / "logs"))
    runners.append(r)
    r._watchdog = broken  # type: ignore[method-assign]  # whatever breaks inside it
    r.launch(("127.0.0.1", 0))
    st = wait_end(r)  # SIGTERM ignored: the fail-safe's SIGKILL ends it
    assert st.end_reason == END_WATCHDOG_FAILED and st.exit_code in (-15, -9)  # stopped, not left running
    assert st.watchdog_failure is not None and "watchdog broken by the test" in st.watchdog_failure
    assert st.ended_at is not None and st.started_at is not None
    assert st.ended_at - st.started_at < runner_mod.FAILSAFE_GRACE_S + 5


def test_status_hands_back_no_env_and_the_job_inherits_no_ray_settings(
    runners: list[Runner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/secret/ray-token")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    show_env = "import os\nprint(sorted(os.environ), flush=True)\n"
    r = start(runners, tmp_path, show_env + "import time\n" + _READY, SECRET="s3cr3t-value")
    log = wait_log(r, "ready")
    assert "'SECRET'" in log and "RAY_" not in log
    st = r.status()
    assert "s3cr3t" not in repr(st) and "SECRET" not in repr(st)
    assert st.job.env == {} and st.job.command == [sys.executable]
