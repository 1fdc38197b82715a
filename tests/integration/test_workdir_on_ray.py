"""A tenant ships a directory and runs it across two nodes of a real local Ray cluster: uploaded
over gRPC, read by the executor from the store, fetched by each rank, hash-checked and unpacked in
its job directory, where `python3 run.py` finds its data file by a relative path. Sandboxed where
this machine can sandbox; elsewhere it runs unsandboxed, and the test id says so (the workdir path
does not depend on the sandbox). A workdir whose bytes do not match their digest never starts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.scheduler.artifacts import ArtifactQuotas, read_bytes
from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.local_cluster import LocalCluster
from neocloud.scheduler.executor.ray_executor import RayExecutor
from neocloud.scheduler.executor.types import ExecJob, ExecutorEvent, Exited
from tests.helpers import wait_until
from tests.integration.test_artifacts_api import ArtifactApi

SANDBOXED = sandbox.probe().full
INV = {n: [f"GPU-{n}-{i}" for i in range(2)] for n in ("node-a", "node-b")}
TIMEOUT_S = 45.0
RUN_PY = """\
import os
rank = os.environ["NEOCLOUD_RANK"]
data = open("data/input.txt").read().strip()
with open(f"out-{rank}.txt", "w") as out:
    out.write(data)
print("rank", rank, "read", data, "in", os.getcwd(), flush=True)
"""


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ArtifactApi]:
    server = ArtifactApi(tmp_path / "scheduler.db", ArtifactQuotas())
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["sandboxed" if SANDBOXED else "unsandboxed (no sandbox primitives here)"])
def test_a_shipped_workdir_runs_across_two_nodes(api: ArtifactApi, tmp_path: Path, mode: str) -> None:
    work = tmp_path / "train"
    (work / "data").mkdir(parents=True)
    (work / "run.py").write_text(RUN_PY)
    (work / "data" / "input.txt").write_text("forty-two\n")
    (work / "data" / "huge.ckpt").write_bytes(b"\0" * 1000)
    (work / ".neocloudignore").write_text("*.ckpt\n")
    with api.client("acme") as acme:
        digest = acme.upload_workdir(work, timeout=10).digest
    log_dir = tmp_path / "jobs"
    store = api.artifacts.root
    tampered = {"on": False}

    def read(d: str) -> bytes:
        data = read_bytes(store, d)
        return data[:-1] + bytes([data[-1] ^ 1]) if tampered["on"] else data

    events: list[ExecutorEvent] = []

    def exits(job_id: str, n: int) -> list[Exited]:
        deadline = time.monotonic() + TIMEOUT_S
        while len(got := [e for e in events if isinstance(e, Exited) and e.job_id == job_id]) < n:
            assert time.monotonic() < deadline, f"{job_id} did not end: {events}"
            events.extend(ex.poll())
            time.sleep(0.05)
        return got

    with LocalCluster({n: 2 for n in INV}, cpus_per_node=2) as cluster:
        ex = RayExecutor(address=cluster.address, log_dir=log_dir, read_workdir=read, sandbox_tenants=SANDBOXED)
        try:
            wait_until(lambda: len(ex.nodes()) == 2, TIMEOUT_S, "both nodes")
            job = ExecJob("shipped", command=["python3", "run.py"], tenant="acme", workdir_digest=digest)
            ex.start(job, [(n, gpus[:1]) for n, gpus in INV.items()], INV)
            assert sorted(e.exit_code for e in exits("shipped", 2)) == [0, 0], [
                ex.read_log("shipped", r) for r in (0, 1)
            ]
            job_dir = log_dir.resolve() / "shipped"
            for rank in (0, 1):
                log = ex.read_log("shipped", rank)[0].decode()
                assert f"rank {rank} read forty-two in {job_dir}" in log, log
                assert (job_dir / f"out-{rank}.txt").read_text() == "forty-two"
            assert not (job_dir / "data" / "huge.ckpt").exists()  # .neocloudignore kept it home

            tampered["on"] = True  # what reaches the node is not what was uploaded
            ex.start(ExecJob("tampered", command=["python3", "run.py"], tenant="acme", workdir_digest=digest),
                     [("node-a", INV["node-a"][1:])], INV)  # fmt: skip
            assert [e.exit_code for e in exits("tampered", 1)] == [127]
            assert b"arrived as sha256:" in ex.read_log("tampered", 0)[0]
            assert not {"run.py", "data"} & set(os.listdir(log_dir.resolve() / "tampered"))  # nothing unpacked
        finally:
            for job_id in ex.detached_jobs():
                ex.cancel(job_id, 0)
                ex.release(job_id)
            ex.shutdown()
