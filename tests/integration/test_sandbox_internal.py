"""The lab's own work is sandboxed too (issue 10): an internal job placed by the real controller on
the node where a tenant's job runs (real Ray, store and Fleet) runs as its own tenant's uid, cannot
read the tenant's job directory, log or /proc/<pid>/environ, and its allocation's proof names its uid.
Nodes are shared only with one_tenant_per_node off (an operator's choice); on by default."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobSpec, JobState
from tests.integration.test_sandbox_ray import uid_processes

CAPS = sandbox.probe()
pytestmark = pytest.mark.skipif(not CAPS.full, reason=f"sandbox primitives missing: {', '.join(CAPS.missing)}")
NODE = "node-a"
TIMEOUT_S = 45.0
SECRET = "victim-secret"
SNOOP = textwrap.dedent(
    """
    import os
    victim = os.environ['VICTIM_DIR']
    for path in [victim + '/rank-0.log', victim + '/data'] + [f'/proc/{p}/environ' for p in os.environ['PIDS'].split()]:
        try:
            open(path, 'rb').read(); print('READ', path)
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
    """
)


def test_an_internal_job_beside_a_tenants_cannot_read_it_and_its_proof_names_its_uid(tmp_path: Path) -> None:
    log_dir = tmp_path / "jobs"
    fleet = Fleet()
    backend = SimBackend(NODE, 2, load=0.1)
    fleet.register(hello(NODE, 1, backend.inventory(), "sim").hello, now_us()).connected = True
    store = JobStore(open_db(tmp_path / "s.db"))
    store.create_tenant("acme")
    store.set_setting("min_runtime_s", "0")
    store.set_setting("one_tenant_per_node", "false")  # else the policy keeps the lab's work off the tenant's node
    with LocalCluster({NODE: 2}, cpus_per_node=2) as cluster:
        executor = RayExecutor(address=cluster.address, log_dir=log_dir)
        controller = Controller(store, fleet, executor)

        def step_until(done: Callable[[], bool], what: str) -> None:
            deadline = time.monotonic() + TIMEOUT_S
            while not done():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                batch = build_batch(NODE, backend.inventory(), [backend.read(True)], now_us())
                batch.seq = int(time.monotonic() * 1000)
                fleet.apply_batch(fleet.nodes[NODE], batch, now_us())
                controller.step()
                time.sleep(0.05)

        try:
            victim_command = ("sh", "-c", "echo v > data; sleep 300")
            victim_spec = JobSpec("acme", "v", JobClass.ON_DEMAND, 1, 1, command=victim_command, env={"TOKEN": SECRET})
            victim = store.submit(victim_spec).job_id
            tenant_uid = sandbox.UID_BASE + store.uid_offset("acme")  # its own, given by the store
            step_until(lambda: len(uid_processes(tenant_uid)) >= 2, "the tenant's rank to run")  # its sh and sleep
            env = {"VICTIM_DIR": str(log_dir.resolve() / victim), "PIDS": " ".join(map(str, uid_processes(tenant_uid)))}
            snoop_spec = JobSpec(
                INTERNAL_TENANT, "s", JobClass.INTERNAL, 1, 1, command=("python3", "-c", SNOOP), env=env
            )
            snoop = store.submit(snoop_spec).job_id
            step_until(lambda: store.get(snoop).state is JobState.SUCCEEDED, "the internal job to finish")

            log = executor.read_log(snoop, 0)[0].decode()
            uid = sandbox.UID_BASE  # the lab's own work: offset 0
            assert "READ" not in log and log.count("denied") >= 4 and f"leaked [] uid {uid}" in log, log
            (allocation,) = store.allocations(snoop)
            assert allocation.node_id == NODE == store.allocations(victim)[0].node_id  # the same node
            proof = json.loads(allocation.sandbox)
            assert proof["uid"] == uid != tenant_uid and proof["memory_bytes"] > 0 and proof["cpus"] >= 1, proof
            assert store.get(victim).state is JobState.RUNNING  # untouched
        finally:
            for job_id in executor.detached_jobs():
                executor.cancel(job_id, 0)
                executor.release(job_id)
            executor.shutdown()


def now_us() -> int:
    return int(time.time() * 1e6)
