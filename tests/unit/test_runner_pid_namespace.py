"""The runner reports the PID namespace its pids are in, and the executor's book
keeps every rank's, so the scheduler can match them against NVML's host pids."""

from __future__ import annotations

import os
from pathlib import Path

from neocloud.scheduler.executor import procs, tracking
from neocloud.scheduler.executor.rank import RankStatus
from neocloud.scheduler.executor.types import ExecJob


def test_own_pid_namespace_is_the_inode_of_proc_self_ns_pid(tmp_path: Path) -> None:
    assert procs.own_pid_namespace() == os.stat("/proc/self/ns/pid").st_ino != 0
    assert procs.own_pid_namespace(tmp_path) == 0  # unreadable: unknown, and matched as such


def status(rank: int, version: int, pids: tuple[int, ...], namespace: int) -> RankStatus:
    job = ExecJob("j1", command=["true"])
    return RankStatus(
        job, rank, 2, f"n{rank}", "ray", "127.0.0.1", version, "log", pid=pids[0], pids=pids, pid_namespace=namespace
    )


def test_the_book_keeps_the_namespace_of_every_rank() -> None:
    job = tracking.JobRecord(ExecJob("j1", command=["true"]), None, [])
    job.ranks = [tracking.RankRecord(rank, f"n{rank}", None) for rank in (0, 1)]
    tracking.apply_status(job, job.ranks[0], status(0, 1, (7,), 4026532500))
    tracking.apply_status(job, job.ranks[1], status(1, 1, (7, 9), 4026532501))  # another pod, another node
    tracking.apply_status(job, job.ranks[1], status(1, 2, (9,), 0))  # a runner that could not tell
    assert job.pids == {7, 9}
    assert job.pid_namespaces == {4026532500, 4026532501}
