"""Ray locked down, on a real local cluster: a client without the cluster's token is
refused, the token file is the Ray user's alone, and what a runner hands to anyone on
Ray (its status) holds no secret of the job's; a job planting a directory at the old
notice name still gets its notice and SIGTERM."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import ExecJob, ExecutorEvent, Exited, Started
from tests.helpers import wait_until

TIMEOUT_S = 45.0
INV = {"node-a": ["GPU-a0"]}
REFUSED = "Authentication token is missing or incorrect"

_CLIENT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], namespace="probe", log_to_driver=False)
    print("CONNECTED", len(ray.util.list_named_actors(all_namespaces=True)), flush=True)
except Exception as e:
    print("REFUSED", type(e).__name__, e, flush=True)
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, RayExecutor, Path]]:
    with LocalCluster({"node-a": 1}, cpus_per_node=2) as cluster:
        log_dir = tmp_path_factory.mktemp("jobs")
        ex = RayExecutor(address=cluster.address, log_dir=log_dir)
        try:
            yield cluster, ex, log_dir
        finally:
            ex.shutdown()


def client(address: str, home: Path, **env: str) -> str:
    """A Ray client in a process of its own, as a job would be: no RAY_* of ours, its own home."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    clean.update(HOME=str(home), **env)  # ~/.ray/auth_token of the home, if any, is a token source
    clean["RAY_NUM_REDIS_GET_RETRIES"] = "2"  # a refused client gives up in seconds (retried once a second)
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT, address], env=clean, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    return out.stdout + out.stderr


def events_until(ex: RayExecutor, job_id: str, kind: type) -> Any:
    seen: list[ExecutorEvent] = []

    def found() -> bool:
        seen.extend(ex.poll())
        return any(isinstance(e, kind) and getattr(e, "job_id", None) == job_id for e in seen)

    wait_until(found, TIMEOUT_S, f"{kind.__name__} of {job_id}")
    return next(e for e in seen if isinstance(e, kind) and getattr(e, "job_id", None) == job_id)


def test_a_client_without_the_token_is_refused_and_with_it_let_in(
    site: tuple[LocalCluster, RayExecutor, Path], tmp_path: Path
) -> None:
    cluster = site[0]
    st = cluster.token_path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, os.geteuid())
    assert stat.S_IMODE(cluster.token_path.parent.stat().st_mode) == 0o700
    out = client(cluster.address, tmp_path)
    assert "REFUSED" in out and REFUSED in out, out
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 64)
    out = client(cluster.address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong))
    assert "REFUSED" in out and REFUSED in out, out
    out = client(cluster.address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(cluster.token_path))
    assert "CONNECTED" in out, out


def test_another_uid_cannot_read_the_token(site: tuple[LocalCluster, RayExecutor, Path]) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to read as another uid (65534, as a tenant's sandbox uid would)")
    read = f"open({str(site[0].token_path)!r}).read()"
    argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", read]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert out.returncode != 0 and "PermissionError" in out.stderr, out.stderr


def test_a_runner_status_holds_no_secret_and_the_job_no_ray_setting(
    site: tuple[LocalCluster, RayExecutor, Path],
) -> None:
    _, ex, log_dir = site
    script = (
        "import os, time\n"
        "d = os.path.dirname(os.environ['NEOCLOUD_CHECKPOINT_FILE'])\n"
        "os.mkdir(os.path.join(d, '.rank-0.preempt.tmp'))\n"  # what used to block the notice
        "print('ray env:', sorted(k for k in os.environ if k.startswith('RAY_')), flush=True)\n"
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('notice', os.path.exists("
        "os.environ['NEOCLOUD_PREEMPT_NOTICE_FILE'])), sys.stdout.flush(), os._exit(0)))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    job = ExecJob("secretive", command=[sys.executable, "-c", script], env={"SECRET": "s3cr3t-value"}, grace_s=10.0)
    ex.start(job, [("node-a", INV["node-a"])], INV)
    events_until(ex, "secretive", Started)
    wait_until(lambda: b"ready" in ex.read_log("secretive", 0)[0], TIMEOUT_S, "the job's 'ready'")
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if "secretive" in a["name"]]
    assert actors, "no runner actor found"
    runner = ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"])
    status: Any = ray.get(runner.status.remote(), timeout=TIMEOUT_S)
    assert "s3cr3t" not in repr(status) and "SECRET" not in repr(status)
    ex.preempt("secretive", grace_s=10.0)
    exited = events_until(ex, "secretive", Exited)
    log = ex.read_log("secretive", 0)[0].decode()
    assert "ray env: []" in log and "notice True" in log, log
    assert (exited.exit_code, exited.end_reason) == (0, "preempted")
    notice = log_dir / "secretive" / "control" / "rank-0.preempt"
    assert stat.S_IMODE(notice.parent.stat().st_mode) == 0o755 and notice.is_file()
    ex.release("secretive")
