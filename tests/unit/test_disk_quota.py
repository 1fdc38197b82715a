"""A rank's disk quota (scheduler/executor/disk.py): its GPUs' share of its job directory's filesystem,
measured as allocated blocks and entries without following links, and a rank past it is stopped by its
runner, says why in its log, and its job fails (a rerun would fill the disk again)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from neocloud.scheduler.control.settle import ending
from neocloud.scheduler.executor import disk, sandbox
from neocloud.scheduler.executor import runner as runner_mod
from neocloud.scheduler.executor.runner import Runner
from neocloud.scheduler.executor.types import END_DISK_QUOTA, END_EXITED, ExecJob, Exited
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.records import Job, JobSpec, JobState

MIB = 1 << 20


def statvfs(blocks: int, files: int) -> os.statvfs_result:
    # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail, f_flag, f_namemax
    return os.statvfs_result((4096, 4096, blocks, blocks, blocks, files, files, files, 0, 255))


def test_the_quota_is_the_ranks_gpu_share_less_the_reserve() -> None:
    fs = statvfs(blocks=1_000_000, files=800_000)  # 4.096 GB, 800k inodes
    two_of_eight = disk.default_quota(fs, rank_gpus=2, node_gpus=8)
    assert two_of_eight == disk.DiskQuota(bytes=int(4096e6 * 0.9) * 2 // 8, files=720_000 * 2 // 8)
    assert disk.default_quota(fs, 0, 8) == disk.default_quota(fs, 3, 0) == disk.DiskQuota(int(4096e6 * 0.9), 720_000)
    assert disk.default_quota(statvfs(1000, 0), 1, 1).files == 0  # a filesystem that counts no inodes


def test_measure_counts_what_is_allocated_and_follows_no_link(tmp_path: Path) -> None:
    job = tmp_path / "job"
    (job / "ckpt").mkdir(parents=True)
    (job / "ckpt" / "a.bin").write_bytes(os.urandom(MIB))
    with open(job / "sparse", "wb") as f:
        f.truncate(1 << 30)  # a 1 GiB hole allocates nothing
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(4 * MIB))
    (job / "link").symlink_to(outside)  # the job's link to elsewhere is one entry, not what it points to
    used, entries = disk.measure(job, disk.DiskQuota(bytes=1 << 40, files=0))
    assert MIB <= used < 2 * MIB and entries == 4
    assert disk.over(disk.DiskQuota(MIB // 2, 0), used, entries) is not None
    assert disk.over(disk.DiskQuota(1 << 40, 3), used, entries) is not None
    assert disk.over(disk.DiskQuota(1 << 40, 0), used, entries) is None


def test_measure_stops_once_past_the_quota(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"f{i}").touch()
    assert disk.measure(tmp_path, disk.DiskQuota(bytes=1 << 40, files=10)) == (0, 11)


def test_a_rank_filling_its_directory_is_stopped_and_its_job_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_mod, "_ray_identity", lambda: ("ray-node", "127.0.0.1", []))
    monkeypatch.setattr(sandbox, "node_capabilities", lambda: sandbox.Capabilities(False, False, "", ("test",)))
    monkeypatch.setattr(disk, "default_quota", lambda fs, rank_gpus, node_gpus: disk.DiskQuota(4 * MIB, 0))
    monkeypatch.setattr(disk, "CHECK_S", 0.1)
    fill = (
        "import os, time\n"
        "job_dir = os.path.dirname(os.environ['NEOCLOUD_CHECKPOINT_FILE'])\n"
        "open(os.path.join(job_dir, 'fill'), 'wb').write(os.urandom(8 << 20))\n"
        "time.sleep(60)\n"
    )
    job = ExecJob("j1", command=[sys.executable, "-c", fill], tenant="acme", grace_s=30)
    r = Runner(job, 0, 1, "node-a", [], str(tmp_path / "logs"))
    r.launch(("127.0.0.1", 0))
    st = r.status()
    deadline = time.monotonic() + 20
    while not st.ended and time.monotonic() < deadline:
        st = r.watch(st.version, 0.5)
    r.reap(5.0)
    log = r.read_log(0, 1 << 20)[0].decode()
    assert st.end_reason == END_DISK_QUOTA and "past its disk quota of 4194304; stopping the rank" in log, log
    spec = JobSpec("acme", "r", JobClass.SPOT, 1, 1, command=("x",))
    intent = ending(Job("j1", spec, JobState.RUNNING, 0.0, 0.0), [Exited("j1", 0, -15, END_DISK_QUOTA)], None, 1.0)
    assert intent.outcome == JobState.FAILED.value and "disk quota" in intent.message
    ok = ending(Job("j1", spec, JobState.RUNNING, 0.0, 0.0), [Exited("j1", 0, 0, END_EXITED)], None, 1.0)
    assert ok.outcome == JobState.SUCCEEDED.value


def test_a_tree_deeper_than_path_max_cannot_hide_from_the_quota(tmp_path: Path) -> None:
    """Relative mkdir/chdir reaches any depth; the walk's absolute paths do not: unmeasurable is over."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(25):  # 25 x 201 characters: past Linux's PATH_MAX of 4,096
            os.mkdir("d" * 200, dir_fd=fd)
            child = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        hidden = os.open("hidden", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(hidden, os.urandom(MIB))
        os.close(hidden)
    finally:
        os.close(fd)
    with pytest.raises(disk.Unmeasurable, match="cannot be measured"):
        disk.measure(tmp_path, disk.DiskQuota(bytes=1 << 40, files=0))


def test_deleted_files_kept_open_count_on_their_filesystem_only(tmp_path: Path) -> None:
    kept = open(tmp_path / "scratch", "wb")  # noqa: SIM115  # held open past its unlink, as a job would
    kept.write(os.urandom(2 * MIB))
    kept.flush()
    os.unlink(tmp_path / "scratch")
    try:
        device = os.stat(tmp_path).st_dev
        assert disk.held_deleted([os.getpid()], device) >= 2 * MIB
        assert disk.held_deleted([os.getpid()], device + 1) == 0  # another filesystem's (a tmpfs /tmp's)
        assert disk.measure(tmp_path, disk.DiskQuota(1 << 40, 0), held=2 * MIB)[0] >= 2 * MIB
    finally:
        kept.close()
    assert disk.held_deleted([os.getpid()], device) == 0
