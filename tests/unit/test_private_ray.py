"""`submit --ray` without Ray: what a rank's boot is told, where the private token travels (the
environment only, never a command line, a status or a log line), and which process a notice goes to."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neocloud.scheduler.executor import private_ray, procs, ray_boot
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


def on_loopback(rank: int) -> dict[str, object]:
    """A rank's settings on this machine: its boot binds the node's IP to find free ports."""
    return {**node(rank).settings(), "node_ip": "127.0.0.1"}


def test_the_head_takes_no_fixed_port() -> None:
    """Ray Client's default 10001 is fixed: the site's head and other tenants' heads on the node want it too."""
    for rank in (0, 1):
        args = ray_boot.start_args(on_loopback(rank))
        fixed = [a for a in args if a.startswith("--") and "port" in a and not a.startswith("--port=")]
        assert all(int(a.partition("=")[2]) > 0 for a in fixed)
        assert any(a.startswith("--ray-client-server-port=") for a in args) == (rank == 0)


def test_a_taken_master_port_fails_the_head_at_once_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another tenant binds the port rank 0's runner picked: no `ray start` (Ray would fail after ~40 s,
    in a traceback), a line naming the port."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = {**on_loopback(0), "head": f"127.0.0.1:{port}", "port": port}
        monkeypatch.setattr(ray_boot.subprocess, "run", _no_ray_start)
        assert ray_boot.run_head(settings, ["python", "train.py"]) == 1
    assert f"port {port} was taken" in capsys.readouterr().err


def test_a_head_or_a_join_that_fails_ends_the_rank_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failed: subprocess.CompletedProcess[bytes] = subprocess.CompletedProcess(["ray"], 1)
    monkeypatch.setattr(ray_boot.subprocess, "run", lambda *a, **k: failed)
    monkeypatch.setattr(ray_boot.time, "sleep", lambda _s: None)
    monkeypatch.setattr(ray_boot, "JOIN_TIMEOUT_S", 0.0)
    monkeypatch.setattr(ray_boot, "port_taken", lambda _port: False)
    monkeypatch.setattr(ray_boot.signal, "signal", lambda *a: None)  # a worker ignores SIGTERM: not pytest
    assert ray_boot.run_head(on_loopback(0), ["python", "train.py"]) == 1
    assert "the private Ray head did not start" in capsys.readouterr().err
    assert ray_boot.run_worker(on_loopback(1)) == 1
    assert "could not join the private Ray head at 10.0.0.1:23456" in capsys.readouterr().err


def _no_ray_start(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    raise AssertionError(f"ray start ran: {args}")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_notice_never_reaches_a_process_that_left_the_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    """The boot chosen, then gone and its pid reused by someone else's process (here: it left the
    rank's cgroup between the choice and the signal): that process is not signalled."""
    _stat(tmp_path, 100, 1, 10)
    _stat(tmp_path, 101, 100, 11)
    _stat(tmp_path, sleeper.pid, 101, 12)
    listings = iter([[100, 101, sleeper.pid], [100, 101]])
    monkeypatch.setitem(procs._CGROUPS, 100, _Cgroup(lambda: next(listings)))
    assert procs.signal_leader(100, signal.SIGTERM, tmp_path) == []
    assert sleeper.poll() is None
    monkeypatch.setitem(procs._CGROUPS, 100, _Cgroup(lambda: [100, 101, sleeper.pid]))
    assert procs.signal_leader(100, signal.SIGTERM, tmp_path) == [sleeper.pid]
    assert sleeper.wait(timeout=30) == -signal.SIGTERM


def test_an_unsandboxed_notice_reaches_only_the_runners_own_child(sleeper: subprocess.Popen[bytes]) -> None:
    """A leader already reaped, its pid reused by a process that is not this runner's child: not signalled."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE)
    grandchild = None
    try:
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        assert procs.signal_leader(grandchild, signal.SIGTERM) == []
        assert Path(f"/proc/{grandchild}").exists() and parent.poll() is None
    finally:
        if grandchild is not None:  # the parent's SIGKILL would leave it running under init
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        parent.kill()
        parent.wait()
    assert procs.signal_leader(sleeper.pid, signal.SIGTERM) == [sleeper.pid]
    assert sleeper.wait(timeout=30) == -signal.SIGTERM


# A process that is not the caller's child: the parent's, which waits for it (and dies with it).
_PARENT = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(p.pid, flush=True)\n"
    "try:\n    p.wait()\nfinally:\n    p.kill()\n"
)


class _Cgroup:
    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids


def test_a_head_that_dies_before_the_ranks_join_ends_the_rank_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    def gone(**_kwargs: object) -> None:
        raise ConnectionError("no GCS at 10.0.0.1:23456")

    monkeypatch.setattr(ray_boot, "port_taken", lambda _port: False)
    monkeypatch.setattr(ray_boot.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(["ray"], 0))
    monkeypatch.setattr(ray, "init", gone)
    assert ray_boot.run_head(on_loopback(0), ["python", "train.py"]) == 1
    assert "the private Ray head does not answer: no GCS at 10.0.0.1:23456" in capsys.readouterr().err


def test_a_notice_before_the_boot_is_inside_goes_to_the_whole_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """bubblewrap still setting up (no process inside yet): the notice is not lost, the rank gets it."""
    sent: list[tuple[int, int | None]] = []

    class Setup(_Cgroup):
        def signal(self, sig: int, skip: int | None = None) -> list[int]:
            sent.append((sig, skip))
            return [100]

    monkeypatch.setitem(procs._CGROUPS, 100, Setup(lambda: [100]))
    assert procs.signal_leader(100, signal.SIGTERM) == [100] and sent == [(signal.SIGTERM, 100)]


def test_without_pidfds_an_unsandboxed_notice_still_arrives(
    monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    def no_pidfds(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    assert procs.signal_leader(sleeper.pid, signal.SIGTERM) == [sleeper.pid]
    assert sleeper.wait(timeout=30) == -signal.SIGTERM
