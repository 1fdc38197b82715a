"""`submit --ray` attacked, on one two-node Ray cluster for the module: a hostile tenant's private Ray
and a co-tenant beside it. What answers without the job's token, where that token can be read, what
of the job outlives it, and how a gang whose head cannot start ends."""

from __future__ import annotations

import http.client
import json
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import END_GANG_FAILED, ExecJob, ExecutorEvent, Exited, Released, Started
from tests.helpers import wait_until
from tests.integration.test_private_ray import INV, TIMEOUT_S, wait_for
from tests.integration.test_ray_lockdown import REFUSED, client
from tests.integration.test_sandbox_ray import uid_processes

CAPS = sandbox.probe()
pytestmark = pytest.mark.skipif(not CAPS.full, reason=f"sandbox primitives missing: {', '.join(CAPS.missing)}")

# The hostile driver: leaves a daemon that detaches (double fork, setsid) to outlive the job, hands the
# test its token and head, and ends when the test says so.
DRIVER = textwrap.dedent(
    """
    import json, os, time
    import ray

    ray.init()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.closerange(0, 1024)
            time.sleep(3600)
        os._exit(0)
    os.wait()
    with open("ray.json.tmp", "w") as f:
        json.dump({"token": os.environ["RAY_AUTH_TOKEN"], "head": os.environ["RAY_ADDRESS"]}, f)
    os.rename("ray.json.tmp", "ray.json")
    while not os.path.exists("done"):
        time.sleep(0.2)
    """
)

# The co-tenant, sandboxed on the same node: tries to read the victim's token where it lives.
SNOOP = textwrap.dedent(
    """
    import os, sys
    victim = sys.argv[1]
    print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
    for path in (victim + "/ray.json", victim + "/rank-0.log"):
        try:
            open(path).read()
            print("READ", path, flush=True)
        except OSError as e:
            print("DENIED", path, type(e).__name__, flush=True)
    print("ray dirs in /tmp", [d for d in os.listdir("/tmp") if d.startswith("ray")], flush=True)
    """
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, RayExecutor, Path]]:
    log_dir = tmp_path_factory.mktemp("attacks") / "jobs"
    with LocalCluster({n: 2 for n in INV}, cpus_per_node=2) as cluster:
        ex = RayExecutor(address=cluster.address, log_dir=log_dir)
        try:
            wait_until(lambda: all(i.sandboxed for i in ex.nodes().values()) and len(ex.nodes()) == 2, TIMEOUT_S)
            yield cluster, ex, log_dir.resolve()
        finally:
            for job_id in ex.detached_jobs():
                ex.cancel(job_id, 0)
                ex.release(job_id)
            ex.shutdown()


def listening_ports(uid: int) -> set[int]:
    """The TCP ports `uid`'s sockets listen on (the sandbox shares the node's network)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[7]) == uid:  # LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def answers_without_token(ip: str, port: int) -> str | None:
    """What an HTTP GET of Prometheus's path returns with no token, if it succeeds."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5) as reply:
            return f"{reply.status} {reply.read(200)!r}"
    except (http.client.HTTPException, OSError, ValueError):  # refused, 401 or 403, or not HTTP/1 (gRPC)
        return None


def test_a_hostile_job_leaks_its_token_nowhere_and_leaves_nothing(
    site: tuple[LocalCluster, RayExecutor, Path], tmp_path: Path
) -> None:
    _, ex, log_dir = site
    events: list[ExecutorEvent] = []
    job = ExecJob("hostile", command=[sys.executable, "-c", DRIVER], tenant="tenant-a", ray=True, cpus=1)
    ex.start(job, [("node-a", INV["node-a"][:1])], INV)
    wait_for(ex, events, Started, "hostile")
    report = log_dir / "hostile" / "ray.json"
    wait_until(report.exists, TIMEOUT_S, f"the driver's report; log: {ex.read_log('hostile', 0)[0][-3000:]!r}")
    got = json.loads(report.read_text())
    uid = sandbox.tenant_uid("tenant-a")

    # Every port of its Ray, from the node: none serves data to a caller without the token...
    ip = got["head"].rpartition(":")[0]
    ports = listening_ports(uid)
    assert int(got["head"].rpartition(":")[2]) in ports and 10001 not in ports
    assert {p: a for p in ports if (a := answers_without_token(ip, p)) is not None} == {}
    out = client(got["head"], tmp_path)  # ...and its GCS lets no one in without it
    assert "REFUSED" in out and REFUSED in out, out

    # A co-tenant on the same node sees none of its processes and cannot read its files.
    snoop = ExecJob("snoop", command=[sys.executable, "-c", SNOOP, str(log_dir / "hostile")], tenant="tenant-b")
    ex.start(snoop, [("node-a", INV["node-a"][1:])], INV)
    wait_for(ex, events, Exited, "snoop")
    seen = ex.read_log("snoop", 0)[0].decode()
    assert "READ" not in seen and seen.count("DENIED") == 2 and "ray dirs in /tmp []" in seen, seen
    pids = json.loads(seen.split("pids ", 1)[1].splitlines()[0])
    assert len(pids) <= 3, seen  # its init, its setpriv'd Python: the victim's processes are not there
    ex.release("snoop")

    # The token is the job's alone: not in the site's Ray session (its runners' logs), not in a status.
    session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    leaked = [p for p in session.rglob("*") if p.is_file() and _holds(p, got["token"])]
    assert leaked == []
    assert got["token"] not in repr(ex.read_log("hostile", 0)) and got["token"] not in repr(events)

    (log_dir / "hostile" / "done").write_text("")
    exited = wait_for(ex, events, Exited, "hostile")[0]
    assert isinstance(exited, Exited) and exited.exit_code == 0, ex.read_log("hostile", 0)[0][-3000:]
    assert uid_processes(uid) == []  # the setsid daemon and Ray's end with the rank, before any release
    ex.release("hostile")
    released = wait_for(ex, events, Released, "hostile")[0]
    assert isinstance(released, Released) and released.verified
    assert uid_processes(uid) == []


def test_a_gang_whose_head_cannot_start_ends_with_a_reason(site: tuple[LocalCluster, RayExecutor, Path]) -> None:
    """Rank 0's `ray start` fails (the job's own environment breaks its Python); rank 1, trying to join a
    head that is not there, is stopped with the gang instead of trying for JOIN_TIMEOUT_S."""
    _, ex, _ = site
    events: list[ExecutorEvent] = []
    job = ExecJob(
        "headless",
        command=[sys.executable, "-c", "print('driver ran')"],
        tenant="tenant-a",
        ray=True,
        grace_s=2.0,
        env={"PYTHONHOME": "/nonexistent"},  # the boot runs `python -I`; `ray start` does not
    )
    ex.start(job, [("node-a", INV["node-a"][:1]), ("node-b", INV["node-b"][:1])], INV)
    exits = {e.rank: e for e in wait_for(ex, events, Exited, "headless", 2) if isinstance(e, Exited)}
    log = ex.read_log("headless", 0)[0].decode()
    assert exits[0].exit_code == 1 and "neocloud: the private Ray head did not start" in log, log
    assert "driver ran" not in log
    assert exits[1].end_reason == END_GANG_FAILED
    ex.release("headless")
    released = wait_for(ex, events, Released, "headless")[0]
    assert isinstance(released, Released) and released.verified


def _holds(path: Path, secret: str) -> bool:
    try:
        return secret.encode() in path.read_bytes()
    except OSError:
        return False


# Kills rank 1's boot from a task on rank 1's node, inside that rank's sandbox (its PID namespace:
# bubblewrap's init is 1, the boot 2), then waits to be stopped.
KILL_WORKER_BOOT = textwrap.dedent(
    """
    import os, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init()
    rank1 = next(n for n in ray.nodes() if n["Alive"] and n["Labels"]["neocloud.io/rank"] == "1")

    @ray.remote(num_cpus=0)
    def kill_boot():
        os.kill(2, 9)

    kill_boot.options(scheduling_strategy=NodeAffinitySchedulingStrategy(rank1["NodeID"], soft=False)).remote()
    print("killing rank 1's boot", flush=True)
    time.sleep(3600)
    """
)


def test_a_worker_ranks_boot_killed_first_takes_its_node_and_the_gang_down(
    site: tuple[LocalCluster, RayExecutor, Path],
) -> None:
    _, ex, _ = site
    events: list[ExecutorEvent] = []
    job = ExecJob("orphaned", command=[sys.executable, "-c", KILL_WORKER_BOOT], tenant="tenant-c", ray=True, grace_s=5)
    ex.start(job, [("node-a", INV["node-a"][:1]), ("node-b", INV["node-b"][:1])], INV)
    exits = {e.rank: e for e in wait_for(ex, events, Exited, "orphaned", 2) if isinstance(e, Exited)}
    log = ex.read_log("orphaned", 0)[0].decode()
    assert "killing rank 1's boot" in log, log
    assert exits[1].exit_code != 0 and exits[0].end_reason == END_GANG_FAILED, exits
    assert uid_processes(sandbox.tenant_uid("tenant-c")) == []  # no daemon of either node outlives its rank
    ex.release("orphaned")
    released = wait_for(ex, events, Released, "orphaned")[0]
    assert isinstance(released, Released) and released.verified
