"""`neocloud bench agent`: CPU of one agent process (8 simulated GPUs at 1 Hz,
spooling, streaming to a real scheduler, and scraped like Prometheus would)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig
from neocloud.wire.netaddr import free_loopback_port


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(seconds: float, warmup_s: float, scrape_interval_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="neocloud-bench-") as tmp:
        sched = BackgroundScheduler(
            SchedulerConfig(
                listen="127.0.0.1:0", db_path=str(Path(tmp) / "bench.db"), metrics_port=None, insecure=True, init=True
            )
        )
        metrics_port = free_loopback_port()
        agent = subprocess.Popen(
            [
                sys.executable, "-m", "neocloud", "--log-level", "WARNING", "agent",
                "--node-id", "bench-agent", "--backend", "sim", "--sim-load", "0.6",
                "--scheduler", f"127.0.0.1:{sched.port}", "--insecure",
                "--spool", str(Path(tmp) / "spool.db"),
                "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port),
            ]
        )  # fmt: skip
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        scrapes = 0
        try:
            _wait_for_metrics(url, agent)
            time.sleep(warmup_s)
            cpu0, wall0 = _process_cpu_s(agent.pid), time.monotonic()
            batches0 = sched.scheduler.telemetry.fleet.counters.batches_accepted
            while (left := seconds - (time.monotonic() - wall0)) > 0:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                scrapes += 1
                time.sleep(min(scrape_interval_s, left))
            cpu1, wall1 = _process_cpu_s(agent.pid), time.monotonic()
            batches = sched.scheduler.telemetry.fleet.counters.batches_accepted - batches0
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            sched.stop()
    return {
        "benchmark": "agent",
        "agent_cpu_percent": round((cpu1 - cpu0) / (wall1 - wall0) * 100, 3),
        "target_agent_cpu_percent": 0.5,
        "wall_s": round(wall1 - wall0, 1),
        "gpus": 8,
        "tick_s": 1.0,
        "batches_acked_by_scheduler": batches,
        "metrics_scrapes": scrapes,
    }


def _wait_for_metrics(url: str, agent: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until the agent's /metrics answers: its start (imports, backend, spool) is not part of the figure."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
            return
        except OSError:
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.returncode} before serving {url}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
