"""`neocloud bench schedule` (API part): jobs submitted through the real gRPC
JobService, authenticated and validated, and persisted in SQLite, per second.

Every acknowledged submit is durable before its RPC returns (the store commits
groups of them with synchronous=FULL); the result checks that every job
acknowledged was persisted."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig
from neocloud.scheduler.store import Role
from neocloud.v1 import jobs_pb2 as pb
from neocloud.v1 import jobs_pb2_grpc as pb_grpc


def admissions(seconds: float = 10.0, clients: int = 8) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="neocloud-bench-") as tmp:
        sched = BackgroundScheduler(
            SchedulerConfig(
                listen="127.0.0.1:0", db_path=str(Path(tmp) / "bench.db"), metrics_port=None, insecure=True, init=True
            )
        )
        store = sched.scheduler.jobs
        store.create_tenant("bench")
        token = store.create_token(Role.TENANT, "bench", tenant="bench")
        counts = [0] * clients
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors: list[str] = []
        deadline = time.monotonic() + seconds

        def client(i: int) -> None:
            with grpc.insecure_channel(f"127.0.0.1:{sched.port}") as channel:
                stub = pb_grpc.JobServiceStub(channel)
                metadata = (("authorization", f"Bearer {token}"),)
                spec = pb.JobSpec(job_class=pb.JOB_CLASS_SPOT, gpus=8, gpus_per_node=8, command=["sleep", "60"])
                while (sent := time.monotonic()) < deadline:
                    try:
                        stub.Submit(
                            pb.SubmitJobRequest(spec=spec, client_request_id=f"c{i}-{counts[i]}"), metadata=metadata
                        )
                    except grpc.RpcError as e:
                        errors.append(f"{e.code()}: {e.details()}")
                        return
                    latencies[i].append(time.monotonic() - sent)
                    counts[i] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        persisted = len(store.queued())
        sched.stop()
    acknowledged = sum(counts)
    if persisted < acknowledged:
        errors.append(f"{acknowledged - persisted} acknowledged job(s) were not persisted")
    ordered = sorted(s for per_client in latencies for s in per_client) or [0.0]
    return {
        "admissions_per_second": round(persisted / wall),
        "target_admissions_per_second": 1000,
        "jobs_persisted": persisted,
        "jobs_acknowledged": acknowledged,
        "submit_p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "submit_p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
        "clients": clients,
        "wall_s": round(wall, 2),
        "errors": errors[:3],
    }
