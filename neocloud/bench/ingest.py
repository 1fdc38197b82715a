"""`neocloud bench ingest`: GPU samples the scheduler accepts per CPU-second of
its own process, fed over real gRPC by separate load-generator processes."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(processes: int, streams: int, ticks: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="neocloud-bench-") as tmp:
        sched = BackgroundScheduler(
            # The load compresses hours of telemetry into seconds; the hourly ledger pass
            # over them is `bench meter`'s to measure, so it does not run here.
            SchedulerConfig(
                listen="127.0.0.1:0",
                db_path=str(Path(tmp) / "bench.db"),
                metrics_port=None,
                insecure=True,
                meter_interval_s=3600.0,
                init=True,
            )
        )
        counters = sched.scheduler.telemetry.fleet.counters
        loads = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "neocloud.bench.load",
                    str(sched.port),
                    str(i * streams),
                    str(streams),
                    str(ticks),
                    str(warmup_s + seconds),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(processes)
        ]
        try:
            time.sleep(warmup_s)
            samples0, batches0, cpu0, wall0 = counters.samples, counters.batches_accepted, _cpu_s(), time.monotonic()
            time.sleep(seconds)
            samples1, batches1, cpu1, wall1 = counters.samples, counters.batches_accepted, _cpu_s(), time.monotonic()
            for p in loads:
                p.wait(timeout=60)
        finally:
            for p in loads:
                p.kill()
            sched.stop()
    samples = samples1 - samples0
    cpu = cpu1 - cpu0
    return {
        "benchmark": "ingest",
        "samples_per_cpu_second": round(samples / cpu) if cpu else None,
        "target_samples_per_cpu_second": 250_000,
        "samples": samples,
        "batches": batches1 - batches0,
        "samples_per_batch": 8 * ticks,
        "scheduler_cpu_s": round(cpu, 3),
        "wall_s": round(wall1 - wall0, 3),
        "samples_per_wall_second": round(samples / (wall1 - wall0)),
        "load_processes": processes,
        "streams_per_process": streams,
        "rejected_batches": counters.batches_rejected,
    }
