"""`submit --ray` without Ray: what a rank's boot is told, where the private token travels (the
environment only, never a command line, a status or a log line), and which process a notice goes to."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from neocloud.scheduler.executor import private_ray, procs
from neocloud.scheduler.executor.rank import public_spec
from neocloud.scheduler.executor.types import ExecJob

TOKEN = "f" * 64


def node(rank: int = 0, memory_bytes: int = 0) -> private_ray.PrivateNode:
    return private_ray.PrivateNode(
        job_id="j-0123456789ab",
        rank=rank,
        world_size=2,
        node_ip="10.0.0.2",
        head="10.0.0.1:23456",
        gpus=2,
        cpus=8,
        memory_bytes=memory_bytes,
    )


def test_the_token_is_in_the_environment_only() -> None:
    argv = private_ray.boot_argv(["python", "train.py"], node())
    assert not any(TOKEN in a for a in argv) and argv[-3:] == ["--", "python", "train.py"]
    env = private_ray.env(TOKEN, "10.0.0.1:23456")
    assert env["RAY_AUTH_TOKEN"] == TOKEN and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ADDRESS"] == "10.0.0.1:23456" and "RAY_AUTH_TOKEN_PATH" not in env  # never the site's file
    assert private_ray.new_token() != private_ray.new_token()


def test_a_runner_hands_no_one_the_token(caplog: pytest.LogCaptureFixture) -> None:
    job = ExecJob("j1", command=["python", "train.py", "--lr", "1"], tenant="acme", ray=True, ray_token=TOKEN)
    public = public_spec(job)
    assert public.ray and public.ray_token == "" and public.command == ["python"]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("starting %s", job)
    assert TOKEN not in caplog.text and TOKEN not in repr(job)


def test_the_object_store_is_a_share_of_the_ranks_memory() -> None:
    settings = node(memory_bytes=10 << 30).settings()
    assert settings["object_store_bytes"] == int((10 << 30) * private_ray.OBJECT_STORE_SHARE)
    assert int(str(settings["memory_bytes"])) + int(str(settings["object_store_bytes"])) == 10 << 30
    assert (settings["port"], settings["head"], settings["cpus"], settings["gpus"]) == (23456, "10.0.0.1:23456", 8, 2)
    small = node(memory_bytes=100 << 20).settings()  # too little for Ray's minimum: Ray sizes itself
    assert (small["object_store_bytes"], small["memory_bytes"]) == (0, 0)
    one = json.loads(private_ray.boot_argv(["x"], node(1))[4])
    assert one["rank"] == 1 and one["temp_dir"].startswith("/tmp/ray-") and len(one["temp_dir"]) < 30


def _stat(root: Path, pid: int, ppid: int, start: int) -> None:
    (root / str(pid)).mkdir()
    # pid (comm) state ppid pgrp session tty tpgid flags 11 counters ... starttime is the 22nd field
    fields = ["S", str(ppid), "1", "1", "0", "-1", "0", *["0"] * 12, str(start)]
    (root / str(pid) / "stat").write_text(f"{pid} (a b) {' '.join(fields)}\n")


def test_a_notice_goes_to_the_first_process_inside_the_sandbox(tmp_path: Path) -> None:
    """bwrap (100) -> its init (101) -> the boot (102, first); Ray's daemons (103, 104) are orphans init
    adopted later; a job process that forked and reparented itself (105) started later still."""
    for pid, ppid, start in ((100, 1, 10), (101, 100, 11), (102, 101, 12), (103, 101, 40), (104, 101, 41)):
        _stat(tmp_path, pid, ppid, start)
    _stat(tmp_path, 105, 101, 50)
    assert procs._first_inside(100, [100, 101, 102, 103, 104, 105], tmp_path) == 102
    assert procs._first_inside(100, [100, 101, 103], tmp_path) == 103  # the boot gone: the earliest left
    assert procs._first_inside(100, [100], tmp_path) is None
