"""Executor latencies on a local two-node Ray cluster (fake GPUs): how long a
1-GPU job takes from start() to running, and how long a preempted job (no
grace) takes until its GPUs are free again."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from neocloud.scheduler.executor import ExecJob, ExecutorEvent, Exited, LocalCluster, RayExecutor, Released, Started

POLL_S = 0.005


def _wait(ex: RayExecutor, pred: Callable[[ExecutorEvent], bool], timeout_s: float = 60.0) -> ExecutorEvent:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in ex.poll():
            if pred(event):
                return event
        time.sleep(POLL_S)
    raise TimeoutError(f"no event within {timeout_s}s")


def _is(kind: type, job_id: str) -> Callable[[ExecutorEvent], bool]:
    return lambda e: isinstance(e, kind) and getattr(e, "job_id", None) == job_id


def ray_timings(runs: int = 5) -> dict[str, Any]:
    """Median seconds from start() to Started of a 1-GPU job, and from
    preempt(grace_s=0) to Released (release() is called on Exited)."""
    to_running: list[float] = []
    to_free: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="neocloud-bench-ray-") as tmp,
        LocalCluster({"node-a": 8, "node-b": 8}) as cluster,
    ):
        ex = RayExecutor(address=cluster.address, log_dir=tmp)
        try:
            for i in range(runs):
                job_id = f"bench-{i}"
                node = "node-a" if i % 2 == 0 else "node-b"
                t0 = time.perf_counter()
                ex.start(ExecJob(job_id, command=["sleep", "60"], grace_s=0.0), [(node, [f"GPU-{node}-0"])])
                _wait(ex, _is(Started, job_id))
                to_running.append(time.perf_counter() - t0)
                t1 = time.perf_counter()
                ex.preempt(job_id, 0.0)
                _wait(ex, _is(Exited, job_id))
                ex.release(job_id)
                _wait(ex, _is(Released, job_id))
                to_free.append(time.perf_counter() - t1)
        finally:
            ex.shutdown()
    return {
        "benchmark": "schedule_ray",
        "submit_to_running_s": round(statistics.median(to_running), 4),
        "preempt_to_free_s": round(statistics.median(to_free), 4),
        "runs": runs,
        "submit_to_running_all_s": [round(t, 4) for t in to_running],
        "preempt_to_free_all_s": [round(t, 4) for t in to_free],
    }
