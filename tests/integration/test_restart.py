"""Restarts that disturb nothing, on real Ray: the embedded head outlives a
`kill -9` of the scheduler, the restarted scheduler re-attaches to the running
job, which finishes normally, and nothing is left behind; and a job whose
runner is killed is killed whole within a second, not only its leader.

The scheduler runs as `neocloud scheduler --ray-address embedded` in a process
of its own; a GPU node joins its head the way a real one does (`ray start
--address HEAD --labels neocloud.io/node-id=...`), with fake GPUs, and a
simulated agent reports it. Ray's directory must be short (socket paths), so
the store lives in a short directory under /tmp.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.scheduler.executor import procs
from neocloud.scheduler.executor.embedded_head import auth_env, running_head, stop_head
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import NODE_LABEL, ExecJob, runner_name
from neocloud.scheduler.liveness import Heartbeat
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobSpec, JobState
from neocloud.wire.netaddr import free_loopback_port
from tests.helpers import wait_until

TIMEOUT_S = 60.0
NODE = "gpu-1"
# Waits for a go file (the test decides when it ends) with a child that outlives the leader.
JOB = "echo $$ > {d}/leader; sleep 300 & echo $! > {d}/child; while [ ! -e {d}/go ]; do sleep 0.1; done"
# The same in its own job directory: the one host directory a sandboxed rank sees.
JOB_IN_ITS_DIR = JOB.format(d='"$(dirname "$NEOCLOUD_CHECKPOINT_FILE")"')


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="nc-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _job_pids(job_id: str) -> list[int]:
    """Every live host process of the job (found by the id in its environment)."""
    mark = f"NEOCLOUD_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            pass
    return sorted(_live_pids(found))


def _host_pids(job_id: str, own: set[int]) -> list[int]:
    """The host pids of the job's processes whose pids in its own PID namespace (a sandbox's, or the
    host's) are `own`: the innermost of each one's NSpid."""
    host = []
    for pid in _job_pids(job_id):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        if int(nspid[-1]) in own:
            host.append(pid)
    return host


def _live_pids(pids: list[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            out.add(pid)
    return out


class SchedulerProcess:
    """`neocloud scheduler --ray-address embedded` as its own process, its output in a file."""

    def __init__(self, db: Path, port: int, ray_port: int) -> None:
        self.argv = [
            sys.executable, "-m", "neocloud", "scheduler", "--db", str(db), "--listen", f"127.0.0.1:{port}",
            "--insecure", "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--commit-interval", "0.05",
            "--ray-address", "embedded", "--ray-head-port", str(ray_port),
        ]  # fmt: skip
        self.log = db.with_name("scheduler.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return time.time()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def join_node(address: str, temp_dir: str, db: Path) -> subprocess.Popen[bytes]:
    """A GPU node joining the head as the README says, with 2 fake GPUs; --block so
    that a SIGTERM to it takes its raylet and workers down."""
    argv = [
        sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}", "--num-gpus=2", "--num-cpus=2",
        f"--labels={NODE_LABEL}={NODE}", f"--temp-dir={temp_dir}", "--disable-usage-stats", "--block",
    ]  # fmt: skip
    with open(db.with_name("node.log"), "ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env=os.environ | auth_env(db),
        )  # fmt: skip


def test_a_killed_scheduler_comes_back_to_its_running_job_on_the_embedded_head(
    short_dir: Path, agent_factory: Callable[..., Agent]
) -> None:
    db = short_dir / "s.db"
    store = JobStore(open_db(db))
    store.create_tenant("acme")
    store.set_setting("min_runtime_s", "0")
    port = free_loopback_port()
    sched = SchedulerProcess(db, port, free_loopback_port())
    node: subprocess.Popen[bytes] | None = None
    head_pid = None
    try:
        sched.start()
        wait_until(lambda: running_head(db) is not None, TIMEOUT_S, f"the embedded head\n{sched.output()}")
        head = running_head(db)
        assert head is not None
        head_pid = head.pid
        node = join_node(head.address, head.temp_dir, db)
        agent_factory(port, backend=SimBackend(NODE, 2, load=0.1), node_id=NODE)
        # Class internal, sandboxed where this host can: it signals through its own job directory.
        spec = JobSpec("internal", "long", JobClass.INTERNAL, 2, 2, command=("sh", "-c", JOB_IN_ITS_DIR))
        job_id = store.submit(spec).job_id
        job_dir = short_dir / "job-logs" / job_id
        wait_until(lambda: (job_dir / "leader").exists(), TIMEOUT_S, f"the job to start\n{sched.output()}")
        wait_until(lambda: (job_dir / "child").exists(), TIMEOUT_S, "the job's child")
        pids = _host_pids(job_id, {int((job_dir / f).read_text()) for f in ("leader", "child")})
        assert len(pids) == 2
        assert store.get(job_id).state is JobState.RUNNING

        sched.kill()  # kill -9: no cleanup of any kind
        assert _live_pids(pids) == set(pids)
        assert running_head(db) == head  # the head did not go down with it
        restarted_at = sched.start()
        heartbeat = Heartbeat(Path(f"{db}.heartbeat"))
        wait_until(
            lambda: (heartbeat.last() or 0) > restarted_at, TIMEOUT_S, f"the restarted scheduler\n{sched.output()}"
        )
        # The restarted scheduler has recovered (it beats from its first step on): the job was
        # re-attached, not requeued, and never stopped.
        job = store.get(job_id)
        assert job.state is JobState.RUNNING and job.requeues == 0, sched.output()
        assert len(store.allocations(job_id)) == 1
        assert _live_pids(pids) == set(pids)
        assert running_head(db) == head  # found alive, not started again

        (job_dir / "go").touch()
        wait_until(lambda: store.get(job_id).state is JobState.SUCCEEDED, TIMEOUT_S, f"success\n{sched.output()}")
        assert store.get(job_id).exit_code == 0
        wait_until(lambda: not _live_pids(pids), 10.0, "the job's processes to be gone")
        assert not _job_pids(job_id)
    finally:
        if sched.proc is not None and sched.proc.poll() is None:
            sched.kill(signal.SIGTERM)
        if node is not None:
            node.terminate()
            node.wait(timeout=30)
        stopped = stop_head(db)
        store.close()
    assert stopped
    # Nothing of the head, the node or the job is left.
    for session in (head_pid, node.pid):
        assert session is not None
        wait_until(lambda s=session: not procs.members(s), 15.0, f"no process left in session {session}")


def test_a_job_whose_runner_is_killed_is_gone_within_seconds(tmp_path: Path) -> None:
    """Old code: PR_SET_PDEATHSIG killed the leader only; its child ran on under init."""
    pids: list[int] = []
    with LocalCluster({NODE: 2}, cpus_per_node=2) as cluster:
        executor = RayExecutor(address=cluster.address, log_dir=tmp_path / "logs")
        try:
            job = ExecJob("orphan", command=["sh", "-c", JOB.format(d=tmp_path)], grace_s=1.0)
            executor.start(job, [(NODE, ["GPU-0", "GPU-1"])], {NODE: ["GPU-0", "GPU-1"]})
            wait_until(lambda: (tmp_path / "child").exists(), TIMEOUT_S, "the job to start")
            pids = [int((tmp_path / f).read_text()) for f in ("leader", "child")]
            ray.kill(ray.get_actor(runner_name("orphan", 0), namespace="neocloud"))
            # Ray's kill of the runner alone can take seconds on a loaded machine; the child sleeps 300 s, so any
            # bound well under that tells "died with its runner" from "ran on under init" (its speed: README, 18-32 ms).
            wait_until(lambda: not _live_pids(pids), TIMEOUT_S, "the job's processes to die with its runner")
        finally:
            for pid in _live_pids(pids):  # only if the test failed: leave nothing running
                os.kill(pid, signal.SIGKILL)
            executor.release("orphan")
            executor.shutdown()
