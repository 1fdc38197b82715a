"""The rank sandbox end to end on a real two-node Ray cluster: the executor learns
from each node's probe that it can sandbox tenant ranks, runners start tenant ranks
in it, the Started events carry the proof, and a tenant's gang spread over both
nodes can neither read its neighbour nor outlive its cancel."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import (
    END_PREEMPTED,
    Checkpoint,
    ExecJob,
    ExecutorEvent,
    Exited,
    Released,
    Started,
)
from tests.helpers import wait_until

CAPS = sandbox.probe()
pytestmark = pytest.mark.skipif(not CAPS.full, reason=f"sandbox primitives missing: {', '.join(CAPS.missing)}")
INV = {n: [f"GPU-{n}-{i}" for i in range(2)] for n in ("node-a", "node-b")}
TIMEOUT_S = 45.0
ATTACK = textwrap.dedent(
    """
    import os, sys, time
    victim = os.environ['VICTIM_DIR']
    for path in (victim + '/rank-0.log', victim + '/data', os.environ['SITE_SECRET']):
        try:
            open(path).read(); print('READ', path)
        except OSError as e:
            print('denied', type(e).__name__)
    leaked = []
    for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
        try:
            if b'victim-secret' in open(f'/proc/{pid}/environ', 'rb').read():
                leaked.append(pid)
        except OSError:
            pass
    print('leaked', leaked, 'uid', os.getuid(), flush=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(300)
        os._exit(0)
    time.sleep(300)
    """
)
# The ordinary job beside the attacks: on its notice it checkpoints and exits 0.
ORDINARY = textwrap.dedent(
    """
    import json, os, signal, sys, time
    open('data', 'w').write('v')
    def on_notice(*_):
        notice = json.load(open(os.environ['NEOCLOUD_PREEMPT_NOTICE_FILE']))
        open(os.environ['NEOCLOUD_CHECKPOINT_FILE'], 'w').write(notice['reason'])
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_notice)
    while True:
        time.sleep(0.1)
    """
)


def uid_processes(uid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def test_tenant_gang_is_sandboxed_on_both_nodes_and_cancel_leaves_nothing(tmp_path: Path) -> None:
    secret = tmp_path / "site" / "operator-token"
    secret.parent.mkdir()
    secret.write_text("operator")
    log_dir = tmp_path / "jobs"
    events: list[ExecutorEvent] = []

    def wait(pred: type, job_id: str, n: int = 1) -> list[ExecutorEvent]:
        deadline = time.monotonic() + TIMEOUT_S
        while len(got := [e for e in events if isinstance(e, pred) and getattr(e, "job_id", "") == job_id]) < n:
            assert time.monotonic() < deadline, f"no {pred.__name__} of {job_id}: {events}"
            events.extend(ex.poll())
            time.sleep(0.05)
        return got

    with LocalCluster({n: 2 for n in INV}, cpus_per_node=2) as cluster:
        ex = RayExecutor(address=cluster.address, log_dir=log_dir)
        try:
            wait_until(lambda: all(i.sandboxed for i in ex.nodes().values()) and len(ex.nodes()) == 2, TIMEOUT_S)
            victim = ExecJob("victim", command=[sys.executable, "-c", ORDINARY], tenant="tenant-a",
                             env={"TOKEN": "victim-secret"}, grace_s=30)  # fmt: skip
            ex.start(victim, [("node-a", INV["node-a"][:1])], INV)
            wait(Started, "victim")
            env = {"VICTIM_DIR": str(log_dir.resolve() / "victim"), "SITE_SECRET": str(secret)}
            attacker = ExecJob("attacker", command=["python3", "-c", ATTACK], tenant="tenant-b", env=env,
                               memory_bytes=256 << 20, cpus=1)  # fmt: skip
            ex.start(attacker, [("node-a", INV["node-a"][1:]), ("node-b", INV["node-b"][:1])], INV)
            started = wait(Started, "attacker", 2)
            proofs = [json.loads(e.sandbox) for e in started if isinstance(e, Started)]
            uid = sandbox.tenant_uid("tenant-b")
            assert all(p["uid"] == uid and p["memory_bytes"] == 256 << 20 and p["cgroup"] for p in proofs), proofs
            assert all(p["disk_bytes"] > 0 and p["pids_max"] > 0 for p in proofs), proofs
            for rank in (0, 1):
                wait_until(lambda r=rank: b"leaked" in ex.read_log("attacker", r)[0], TIMEOUT_S)
                log = ex.read_log("attacker", rank)[0].decode()
                assert "READ" not in log and log.count("denied") == 3 and "leaked [] uid" in log, log
            wait_until(lambda: len(uid_processes(uid)) >= 6, TIMEOUT_S, "both ranks' escapers")
            ex.cancel("attacker", 1.0)
            ex.release("attacker")
            released = wait(Released, "attacker")[0]
            assert isinstance(released, Released) and released.verified
            assert uid_processes(uid) == []  # the setsid'd grandchildren died with their ranks
            ordinary = ExecJob("ordinary", command=["sh", "-c", "exit 7"], tenant="tenant-c")
            ex.start(ordinary, [("node-b", INV["node-b"][1:])], INV)
            exited = wait(Exited, "ordinary")[0]
            assert isinstance(exited, Exited) and exited.exit_code == 7
            assert not [e for e in events if isinstance(e, Exited) and e.job_id == "victim"]  # untouched
            ex.preempt("victim", 30.0)  # and it still gets its notice, checkpoints and exits with its own code
            wait(Checkpoint, "victim")
            exited = wait(Exited, "victim")[0]
            assert isinstance(exited, Exited) and (exited.exit_code, exited.end_reason) == (0, END_PREEMPTED)
        finally:
            for job_id in ex.detached_jobs():
                ex.cancel(job_id, 0)
                ex.release(job_id)
            ex.shutdown()
