"""The runner (often root) opens a rank's log in a directory the tenant's job can write: a link the job
planted at the log's name must never make it write into a host file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neocloud.scheduler.executor import procs
from neocloud.scheduler.executor.logfile import open_for_append


def test_a_link_planted_at_the_log_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "etc-ld.so.preload"
    victim.write_text("host file\n")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "rank-1.log").symlink_to(victim)
    with pytest.raises(OSError):
        open_for_append(job_dir / "rank-1.log")
    with pytest.raises(OSError):
        procs.spawn(["true"], {}, job_dir / "rank-1.log")
    assert victim.read_text() == "host file\n"


def test_a_fifo_at_the_log_name_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "rank-0.log")
    with pytest.raises(OSError):  # ENXIO with no reader, else "not a regular file": never a blocked runner
        open_for_append(tmp_path / "rank-0.log")
    (tmp_path / "rank-1.log").mkdir()
    with pytest.raises(OSError):
        open_for_append(tmp_path / "rank-1.log")


def test_the_log_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "rank-0.log"
    path.write_bytes(b"one\n")
    with open_for_append(path) as log:
        log.write(b"two\n")
    assert path.read_bytes() == b"one\ntwo\n"
