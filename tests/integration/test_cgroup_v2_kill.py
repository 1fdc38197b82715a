"""The cgroup v2 kill on a real cgroup2 hierarchy: a rank that setsid()s and double-forks still dies
whole through `cgroup.kill` (sandbox.RankCgroup, version "v2"). On a host whose controllers are bound
to cgroup v1 (this test mounts a cgroup2 hierarchy of its own), the v2 limit files cannot be written;
those are unit-tested (tests/unit/test_sandbox_cgroup.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.scheduler.executor import sandbox

# Leaves a setsid'd grandchild behind, then sleeps: the tree the kill must take whole.
ESCAPER = """
import os, sys, time
child = os.fork()
if child == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(300)
    os._exit(0)
os.waitpid(child, 0)  # the grandchild now exists, in a session of its own
print("ready", flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


@pytest.fixture
def v2_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "cgroup2"
    root.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a cgroup2 hierarchy")
    mounted = subprocess.run(["mount", "-t", "cgroup2", "none", str(root)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount cgroup2: {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_cgroup_kill_takes_a_setsid_double_fork_whole(v2_root: Path) -> None:
    # The one cgroup2 hierarchy of the host (a second mount shows the same one): a name of this run's own.
    cg = sandbox.RankCgroup(f"test-v2-kill-{os.getpid()}", "v2", v2_root)
    for d in cg.dirs.values():
        d.mkdir(parents=True)
    try:
        kill_and_check(cg)
    finally:
        cg.kill_all()
        cg.remove()
        with contextlib.suppress(OSError):
            (v2_root / "neocloud").rmdir()  # only if no other rank's is there


def kill_and_check(cg: sandbox.RankCgroup) -> None:
    if not (cg.dirs[""] / "cgroup.kill").exists():
        pytest.skip("cgroup v2 without cgroup.kill (kernel < 5.14)")
    join = "import os,sys\nopen(sys.argv[1],'w').write(str(os.getpid()))\nos.execv(sys.executable,sys.argv[2:])"
    argv = [sys.executable, "-c", join, *cg.procs_files(), sys.executable, "-c", ESCAPER]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while len(cg.pids()) < 2 and time.monotonic() < deadline:  # the leader and the setsid'd grandchild
        time.sleep(0.02)
    members = cg.pids()
    assert len(members) == 2 and proc.pid in members
    escaped = next(p for p in members if p != proc.pid)
    assert os.getsid(escaped) != os.getsid(proc.pid)  # out of the leader's session: only the cgroup holds it
    killed = cg.kill_all()
    proc.wait(timeout=10)
    assert set(members) <= set(killed) and cg.empty()
    assert not alive(escaped)
