"""RayExecutor on a real multi-node Ray cluster on this machine: a head with no
GPUs and two worker nodes with 8 (fake) GPUs each, labelled node-a and node-b.

One cluster for the module (starting one is slow on a small machine); every
test waits for events with deadlines and leaves no job behind.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.util.placement_group import get_placement_group, placement_group_table

from neocloud.domain.errors import FailedPreconditionError
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import (
    NODE_LABEL,
    Checkpoint,
    ExecJob,
    ExecutorEvent,
    Exited,
    JobLost,
    NodeLost,
    Released,
    Started,
)

INV = {n: [f"GPU-{n}-{i:02d}" for i in range(8)] for n in ("node-a", "node-b")}
TIMEOUT_S = 45.0


@dataclass
class Env:
    cluster: LocalCluster
    ex: RayExecutor
    log_dir: Path
    events: list[ExecutorEvent] = field(default_factory=list)

    def wait_for(self, pred: Callable[[ExecutorEvent], bool], timeout_s: float = TIMEOUT_S) -> Any:
        """The first event (polled now or earlier and not yet taken) matching `pred`."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self.events):
                if pred(event):
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event within {timeout_s}s; unclaimed: {self.events}")
            self.events += self.ex.poll()
            time.sleep(0.02)

    def event(self, kind: type, job_id: str, **fields: Any) -> Any:
        return self.wait_for(
            lambda e: (
                isinstance(e, kind)
                and getattr(e, "job_id", None) == job_id
                and all(getattr(e, k) == v for k, v in fields.items())
            )
        )

    def wait_log(self, job_id: str, rank: int, text: str, timeout_s: float = TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            data, _ = self.ex.read_log(job_id, rank, 0, 1 << 20)
            if text in data.decode():
                return data.decode()
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the log of {job_id}/{rank} within {timeout_s}s: {data!r}")
            self.events += self.ex.poll()
            time.sleep(0.05)

    def release(self, job_id: str) -> Released:
        self.ex.release(job_id)
        released: Released = self.event(Released, job_id)
        return released


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with LocalCluster({n: 8 for n in INV}, cpus_per_node=2) as cluster:
        log_dir = tmp_path_factory.mktemp("jobs")
        e = Env(cluster, RayExecutor(address=cluster.address, log_dir=log_dir), log_dir)
        yield e
        e.ex.shutdown()


@pytest.fixture
def ex(env: Env) -> Iterator[Env]:
    """The shared cluster, with whatever a (failed) test left running cleared away after it."""
    yield env
    left = env.ex.detached_jobs()
    env.ex.reattach(left)
    for job_id in left:
        env.ex.cancel(job_id, 0)
        env.ex.release(job_id)
    for job_id in left:
        env.event(Released, job_id)


def sh(script: str, job_id: str, **kw: Any) -> ExecJob:
    return ExecJob(job_id=job_id, command=["sh", "-c", script], **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_two_gpu_job_on_node_b_reports_gpus_logs_checkpoint_and_exit(ex: Env, tmp_path: Path) -> None:
    script = (
        'echo "cvd=$CUDA_VISIBLE_DEVICES ws=$NEOCLOUD_WORLD_SIZE master=${NEOCLOUD_MASTER_ADDR:-none} mine=$MINE"; '
        'env | grep -c "^RAY_" ; echo to-stderr >&2; touch "$NEOCLOUD_CHECKPOINT_FILE"'
    )
    ex.ex.start(sh(script, "two", env={"MINE": "yes"}), [("node-b", INV["node-b"][3:5])], INV)
    # An entrypoint job beside it, importing a module from the job's own PYTHONPATH.
    (tmp_path / "nc_entry.py").write_text(
        "import os\ndef main():\n    print('entry', os.environ['NEOCLOUD_JOB_ID'])\n    return 3\n"
    )
    ex.ex.start(
        ExecJob("entry", entrypoint="nc_entry:main", env={"PYTHONPATH": str(tmp_path)}), [("node-a", INV["node-a"][:1])]
    )

    started = ex.event(Started, "two")
    assert started.rank == 0 and started.node_id == "node-b"
    assert len(started.gpu_indices) == 2
    assert started.gpu_uuids == tuple(INV["node-b"][i] for i in started.gpu_indices)  # what Ray gave, not what we asked
    assert ex.event(Checkpoint, "two").at > 0
    exited = ex.event(Exited, "two")
    assert (exited.exit_code, exited.end_reason) == (0, "exited")
    log, eof = ex.ex.read_log("two", 0, 0, 1 << 20)
    assert eof
    text = log.decode()
    assert f"cvd={','.join(map(str, started.gpu_indices))} ws=1 master=none mine=yes" in text
    assert text.splitlines()[1] == "0"  # none of Ray's own RAY_* settings leak into the job
    assert "to-stderr" in text
    part, eof = ex.ex.read_log("two", 0, 4, 3)
    assert part == log[4:7] and not eof
    assert started.pid in ex.release("two").pids

    entry = ex.event(Exited, "entry")
    assert (entry.exit_code, entry.end_reason) == (3, "exited")
    assert "entry entry" in ex.ex.read_log("entry", 0)[0].decode()
    ex.release("entry")
    # After release the runner is gone; the log is still read from log_dir on this machine.
    assert ex.ex.read_log("two", 0, 0, 1 << 20) == (log, True)


def test_sixteen_gpu_gang_job_spans_both_nodes(ex: Env) -> None:
    script = (
        'echo "rank=$NEOCLOUD_RANK ws=$NEOCLOUD_WORLD_SIZE '
        'master=$NEOCLOUD_MASTER_ADDR:$NEOCLOUD_MASTER_PORT gpus=$CUDA_VISIBLE_DEVICES"'
    )
    ex.ex.start(sh(script, "gang"), [("node-a", INV["node-a"]), ("node-b", INV["node-b"])], INV)
    s0, s1 = ex.event(Started, "gang", rank=0), ex.event(Started, "gang", rank=1)
    assert (s0.node_id, s1.node_id) == ("node-a", "node-b")
    assert s0.gpu_uuids == tuple(INV["node-a"]) and s1.gpu_uuids == tuple(INV["node-b"])
    for rank in (0, 1):
        assert ex.event(Exited, "gang", rank=rank).exit_code == 0
    node_a_ip = next(n["NodeManagerAddress"] for n in ray.nodes() if n["Labels"].get(NODE_LABEL) == "node-a")
    logs = [ex.ex.read_log("gang", rank)[0].decode().strip() for rank in (0, 1)]
    port = logs[0].split(":")[1].split()[0]
    assert port.isdigit()
    for rank, log in enumerate(logs):
        assert log == f"rank={rank} ws=2 master={node_a_ip}:{port} gpus=0,1,2,3,4,5,6,7"
    assert set(ex.release("gang").pids) >= {s0.pid, s1.pid}

    # A rank that fails stops the rest of its gang.
    script = '[ "$NEOCLOUD_RANK" = 1 ] && exit 7; exec sleep 60'
    ex.ex.start(sh(script, "gang-fails", grace_s=1.0), [("node-a", INV["node-a"][:1]), ("node-b", INV["node-b"][:1])])
    failed = ex.event(Exited, "gang-fails", rank=1)
    assert (failed.exit_code, failed.end_reason) == (7, "exited")
    stopped = ex.event(Exited, "gang-fails", rank=0)
    assert (stopped.exit_code, stopped.end_reason) == (-15, "gang_failed")
    ex.release("gang-fails")


def test_preempt_delivers_notice_and_the_job_exits_within_grace(ex: Env) -> None:
    script = (
        "trap 'if [ -f \"$NEOCLOUD_PREEMPT_NOTICE_FILE\" ]; then echo got notice; fi; exit 0' TERM; "
        "echo ready; while :; do sleep 0.1; done"
    )
    ex.ex.start(sh(script, "polite"), [("node-b", INV["node-b"][:1])], INV)
    ex.wait_log("polite", 0, "ready")
    ex.ex.preempt("polite", grace_s=2.0)
    exited = ex.event(Exited, "polite")
    # Status 0 is the job's own `exit 0`: had it outlived the grace period, SIGKILL would read -9.
    assert (exited.exit_code, exited.end_reason) == (0, "preempted")
    assert "got notice" in ex.ex.read_log("polite", 0)[0].decode()
    ex.release("polite")


def test_a_job_ignoring_sigterm_is_killed_and_release_frees_its_gpus(ex: Env) -> None:
    script = 'trap "" TERM; sleep 300 & echo "ready $$ $!"; while :; do sleep 0.2; done'
    ex.ex.start(sh(script, "stubborn"), [("node-a", INV["node-a"])], INV)
    started = ex.event(Started, "stubborn")
    leader, child = (int(p) for p in ex.wait_log("stubborn", 0, "ready").split()[1:3])
    assert leader == started.pid
    # A second 8-GPU job on node-a cannot be placed while the first holds the node.
    ex.ex.start(sh("echo fits", "next"), [("node-a", INV["node-a"])], INV)
    assert placement_group_table(get_placement_group("neocloud-next"))["state"] != "CREATED"

    t0 = time.monotonic()
    ex.ex.preempt("stubborn", grace_s=1.0)
    exited = ex.event(Exited, "stubborn")
    assert time.monotonic() - t0 >= 0.9
    assert (exited.exit_code, exited.end_reason) == (-9, "preempted")
    released = ex.release("stubborn")
    assert {leader, child} <= set(released.pids) and released.verified
    # The namespace those pids are in, for the scheduler to match NVML's host pids through.
    assert released.pid_namespaces == (os.stat("/proc/self/ns/pid").st_ino,)
    with pytest.raises(ProcessLookupError):
        os.killpg(leader, 0)
    assert not any(alive(pid) for pid in released.pids)
    with pytest.raises(ValueError):
        get_placement_group("neocloud-stubborn")

    assert ex.event(Started, "next").node_id == "node-a"  # the GPUs are free again
    assert ex.event(Exited, "next").exit_code == 0
    ex.release("next")


def test_cancel_max_runtime_and_cancel_while_pending(ex: Env) -> None:
    ex.ex.start(sh("exec sleep 60", "cancel-me", grace_s=1.0), [("node-b", INV["node-b"][:1])], INV)
    ex.ex.start(sh("exec sleep 60", "too-long", grace_s=0.5, max_runtime_s=1.0), [("node-a", INV["node-a"][:1])], INV)
    # Ray may create placement groups out of order: the blocker must hold its GPU first.
    ex.event(Started, "too-long")
    ex.ex.start(sh("exec sleep 60", "never-fits"), [("node-a", INV["node-a"])], INV)  # 8 GPUs: 1 is held until released
    ex.event(Started, "cancel-me")
    ex.ex.cancel("cancel-me")
    cancelled = ex.event(Exited, "cancel-me")
    assert (cancelled.exit_code, cancelled.end_reason) == (-15, "cancelled")
    ex.ex.cancel("never-fits")
    pending = ex.event(Exited, "never-fits")
    assert (pending.exit_code, pending.end_reason) == (None, "cancelled")
    too_long = ex.event(Exited, "too-long")
    assert too_long.end_reason == "max_runtime"
    for job_id in ("cancel-me", "too-long", "never-fits"):
        ex.release(job_id)


def test_a_reclaim_warning_reaches_the_job_before_any_notice(ex: Env) -> None:
    script = (
        'while [ ! -s "$NEOCLOUD_RECLAIM_WARNING_FILE" ]; do sleep 0.05; done; cat "$NEOCLOUD_RECLAIM_WARNING_FILE"'
    )
    ex.ex.start(sh(script, "warned"), [("node-b", INV["node-b"][:1])], INV)
    ex.event(Started, "warned")
    ex.ex.warn("warned", "internal demand will need these GPUs in about 10 minutes")
    exited = ex.event(Exited, "warned")
    assert (exited.exit_code, exited.end_reason) == (0, "exited")  # warned, not stopped
    warning = json.loads(ex.wait_log("warned", 0, "internal demand").strip().splitlines()[-1])
    assert warning["job_id"] == "warned" and "10 minutes" in warning["reason"]
    ex.release("warned")


def test_a_new_executor_reattaches_to_a_running_job(ex: Env, tmp_path: Path) -> None:
    go = tmp_path / "go"
    script = 'echo ready; while [ ! -f "$GO" ]; do sleep 0.1; done; exit 3'
    ex.ex.start(sh(script, "survivor", env={"GO": str(go)}), [("node-b", INV["node-b"][:2])], INV)
    before = ex.event(Started, "survivor")

    ex.ex.shutdown()  # the scheduler goes away; detached runners keep the job running
    ex.ex = RayExecutor(address=ex.cluster.address, log_dir=ex.log_dir)
    assert "survivor" in ex.ex.detached_jobs()
    assert ex.ex.reattach(["survivor", "no-such-job"]) == {"survivor"}
    again = ex.event(Started, "survivor")
    assert (again.pid, again.at) == (before.pid, before.at)  # the same process: nothing restarted
    go.touch()
    exited = ex.event(Exited, "survivor")
    assert (exited.exit_code, exited.end_reason) == (3, "exited")
    ex.release("survivor")


def test_a_dead_node_is_reported_with_the_jobs_it_held(ex: Env) -> None:
    """Last: it removes node-b from the shared cluster."""
    ex.ex.start(sh("echo ready; while :; do sleep 0.2; done", "doomed"), [("node-b", INV["node-b"][:1])], INV)
    started = ex.event(Started, "doomed")
    ex.cluster.remove_node("node-b")
    assert ex.wait_for(lambda e: isinstance(e, NodeLost)).node_id == "node-b"
    assert ex.event(JobLost, "doomed")
    assert (ex.event(Exited, "doomed").end_reason, ex.ex.nodes()["node-b"].alive) == ("lost", False)
    assert not ex.release("doomed").verified  # its node is gone: NVML must confirm
    deadline = time.monotonic() + 10
    while alive(started.pid):  # the runner's death took the job's leader with it
        assert time.monotonic() < deadline, f"job leader {started.pid} survived its runner"
        time.sleep(0.05)


def test_cpus_and_memory_go_into_the_bundle_and_a_node_that_cannot_hold_them_refuses(ex: Env) -> None:
    job = sh('echo "task=$NEOCLOUD_ARRAY_TASK_ID"', "sized", cpus=2, memory_bytes=64 * 2**20)
    ex.ex.start(job, [("node-a", INV["node-a"][:1])], INV)
    ex.event(Started, "sized")
    bundles = get_placement_group("neocloud-sized").bundle_specs
    assert bundles == [{"GPU": 1.0, "CPU": 2.0, "memory": float(64 * 2**20)}]
    assert ex.event(Exited, "sized").exit_code == 0
    ex.release("sized")
    # node-a has 2 CPUs: a bundle of 3 would wait forever, so the start is refused, naming both.
    with pytest.raises(FailedPreconditionError, match="node-a: 3 CPUs asked, its Ray node has 2"):
        ex.ex.start(sh("true", "too-wide", cpus=3), [("node-a", INV["node-a"][:1])], INV)
    # node-a, not node-b: the dead-node test before this one takes node-b out of the shared cluster.
    with pytest.raises(FailedPreconditionError, match=f"node-a: {2**50} bytes of memory asked"):
        ex.ex.start(sh("true", "too-big", memory_bytes=2**50), [("node-a", INV["node-a"][:1])], INV)
    assert "too-wide" not in ex.ex.detached_jobs() and "too-big" not in ex.ex.detached_jobs()
