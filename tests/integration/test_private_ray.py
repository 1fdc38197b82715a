"""`submit --ray` on a real two-node Ray cluster: a tenant's program gets a private Ray spanning its
ranks, inside their sandboxes, as its own uid, with a token of its own. That token opens nothing but
its own cluster (the site's refuses it), the site's token does not open it, a preemption notice
reaches the driver while its cluster still serves it, and nothing of it survives the release."""

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
    END_EXITED,
    END_PREEMPTED,
    ExecJob,
    ExecutorEvent,
    Exited,
    Released,
    Started,
)
from tests.helpers import wait_until
from tests.integration.test_ray_lockdown import _CLIENT, REFUSED, client
from tests.integration.test_sandbox_ray import uid_processes

CAPS = sandbox.probe()
pytestmark = pytest.mark.skipif(not CAPS.full, reason=f"sandbox primitives missing: {', '.join(CAPS.missing)}")
INV = {n: [f"GPU-{n}-{i}" for i in range(2)] for n in ("node-a", "node-b")}
TIMEOUT_S = 90.0  # two private Ray nodes start on a 2-core machine beside the site's three

# The tenant's driver: reports what its Ray is and tries the site's with its own token; on the
# notice, uses every node of its Ray once more before it exits.
DRIVER = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init()
    nodes = [n for n in ray.nodes() if n["Alive"]]

    @ray.remote(num_gpus=1)
    def where():
        return {"uid": os.getuid(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "site_ray": sorted(k for k in os.environ if k.startswith("RAY_AUTH_TOKEN_PATH"))}

    def everywhere():
        strategy = lambda n: NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        return {n["Labels"]["neocloud.io/rank"]: ray.get(where.options(scheduling_strategy=strategy(n)).remote())
                for n in nodes}

    def write(name, value):
        with open(name + ".tmp", "w") as f:
            json.dump(value, f)
        os.rename(name + ".tmp", name)

    def on_notice(signum, frame):
        write("after-notice.json", everywhere())
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_notice)
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_NUM_REDIS_GET_RETRIES": "2"}
    site = subprocess.run([sys.executable, "-c", os.environ["CLIENT"], os.environ["SITE_GCS"]],
                          env=env, capture_output=True, text=True, timeout=60)
    write("ray.json", {"ranks": sorted(n["Labels"].get("neocloud.io/rank") for n in nodes), "placed": everywhere(),
                       "site": site.stdout + site.stderr, "head": os.environ["RAY_ADDRESS"]})
    while True:
        time.sleep(0.2)
    """
)


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    with LocalCluster({n: 2 for n in INV}, cpus_per_node=2) as cluster:
        ex = RayExecutor(address=cluster.address, log_dir=tmp_path / "jobs")
        try:
            wait_until(lambda: all(i.sandboxed for i in ex.nodes().values()) and len(ex.nodes()) == 2, TIMEOUT_S)
            yield cluster, ex, tmp_path / "jobs"
        finally:
            for job_id in ex.detached_jobs():
                ex.cancel(job_id, 0)
                ex.release(job_id)
            ex.shutdown()


def wait_for(ex: RayExecutor, events: list[ExecutorEvent], kind: type, job_id: str, n: int = 1) -> list[ExecutorEvent]:
    deadline = time.monotonic() + TIMEOUT_S
    while len(got := [e for e in events if isinstance(e, kind) and getattr(e, "job_id", "") == job_id]) < n:
        assert time.monotonic() < deadline, f"no {kind.__name__} of {job_id}: {events}"
        events.extend(ex.poll())
        time.sleep(0.05)
    return got


def test_a_private_ray_spans_the_ranks_and_is_the_tenants_alone(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster, ex, log_dir = site
    events: list[ExecutorEvent] = []
    job = ExecJob(
        "trainer",
        command=[sys.executable, "-c", DRIVER],
        tenant="tenant-a",
        ray=True,
        cpus=1,
        memory_bytes=1 << 30,
        env={"CLIENT": _CLIENT, "SITE_GCS": cluster.address},
    )
    ex.start(job, [("node-a", INV["node-a"][:1]), ("node-b", INV["node-b"][1:])], INV)
    started = {e.rank: e for e in wait_for(ex, events, Started, "trainer", 2) if isinstance(e, Started)}
    report = log_dir.resolve() / "trainer" / "ray.json"
    wait_until(report.exists, TIMEOUT_S, f"the driver's report; log: {ex.read_log('trainer', 0)[0][-3000:]!r}")
    got = json.loads(report.read_text())
    uid = sandbox.tenant_uid("tenant-a")
    assert got["ranks"] == ["0", "1"]  # both ranks' nodes, on two site nodes
    for rank, placed in got["placed"].items():  # a task on each rank's node runs as the tenant, on its GPU
        assert placed["uid"] == uid and not placed["site_ray"]
        assert placed["cuda"] == ",".join(map(str, started[int(rank)].gpu_indices))
    assert "REFUSED" in got["site"] and REFUSED in got["site"], got["site"]  # its token opens only its own Ray
    site_token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster.token_path)}
    out = client(got["head"], tmp_path, **site_token)
    assert "REFUSED" in out and REFUSED in out, out  # and the site's token does not open it

    ex.preempt("trainer", 60.0)
    exits = wait_for(ex, events, Exited, "trainer", 2)
    assert {(e.exit_code, e.end_reason) for e in exits if isinstance(e, Exited)} == {(0, END_PREEMPTED)}
    after = json.loads((log_dir / "trainer" / "after-notice.json").read_text())
    assert len(after) == 2  # the notice reached the driver while both nodes still served it
    ex.release("trainer")
    released = wait_for(ex, events, Released, "trainer")[0]
    assert isinstance(released, Released) and released.verified
    assert uid_processes(uid) == []  # no Ray daemon of the tenant's outlives its job


def test_the_drivers_exit_status_is_the_jobs(site) -> None:  # type: ignore[no-untyped-def]
    _, ex, _ = site
    events: list[ExecutorEvent] = []
    driver = "import ray, sys; ray.init(); sys.exit(3 if ray.cluster_resources().get('GPU') == 1 else 4)"
    job = ExecJob("one-rank", command=[sys.executable, "-c", driver], tenant="tenant-b", ray=True)
    ex.start(job, [("node-b", INV["node-b"][:1])], INV)
    exited = wait_for(ex, events, Exited, "one-rank")[0]
    assert isinstance(exited, Exited) and exited.exit_code == 3, ex.read_log("one-rank", 0)[0][-3000:]


def test_a_driver_that_succeeds_ends_the_whole_job_at_once(site) -> None:  # type: ignore[no-untyped-def]
    """The worker rank ends with the driver (the executor stops it; its head is gone), not at a deadline."""
    _, ex, _ = site
    events: list[ExecutorEvent] = []
    driver = "import ray, sys; ray.init(); sys.exit(0 if ray.cluster_resources().get('GPU') == 2 else 4)"
    job = ExecJob("done", command=[sys.executable, "-c", driver], tenant="tenant-b", ray=True, grace_s=600)
    ex.start(job, [("node-a", INV["node-a"][:1]), ("node-b", INV["node-b"][:1])], INV)
    exits = {e.rank: e for e in wait_for(ex, events, Exited, "done", 2) if isinstance(e, Exited)}
    assert {(e.exit_code, e.end_reason) for e in exits.values()} == {(0, END_EXITED)}, ex.read_log("done", 0)[0][-3000:]
