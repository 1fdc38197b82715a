"""`neocloud demo`: a scheduler and simulated 8-GPU nodes, each agent its own
process, streaming over mTLS on loopback; prints what arrived."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neocloud import tls
from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig

LOADS = (0.9, 0.3, 0.6, None)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a scheduler and simulated GPU nodes on this machine and show what arrives",
        description="Start a scheduler and --nodes simulated 8-GPU nodes (each agent a child process) streaming "
        "telemetry over mTLS on loopback for --seconds, then print the fleet as the scheduler saw it.",
    )
    p.add_argument("--nodes", type=int, default=2, help="simulated 8-GPU nodes (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=20.0, help="how long the agents stream (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 32 or args.seconds <= 0:
        print("neocloud demo: --nodes must be 1..32 and --seconds positive", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="neocloud-demo-") as tmp:
        work = Path(tmp)
        tls.write_ca(work)
        tls.write_server(work, ["localhost", "127.0.0.1"])
        sched = BackgroundScheduler(
            SchedulerConfig(
                listen="127.0.0.1:0",
                db_path=str(work / "scheduler.db"),
                metrics_host="127.0.0.1",
                metrics_port=0,
                ca_file=str(work / "ca.pem"),
                cert_file=str(work / "scheduler.pem"),
                key_file=str(work / "scheduler-key.pem"),
            )
        )
        print(
            f"scheduler: telemetry on 127.0.0.1:{sched.port} (mTLS), metrics on http://127.0.0.1:{sched.scheduler.metrics_port}/metrics"
        )
        agents = []
        for i in range(args.nodes):
            node_id = f"demo-node-{i + 1}"
            tls.write_node(work, node_id)
            load = LOADS[i % len(LOADS)]
            cmd = [
                sys.executable, "-m", "neocloud.cli", "--log-level", "WARNING", "agent",
                "--node-id", node_id, "--backend", "sim", "--scheduler", f"localhost:{sched.port}",
                "--ca", str(work / "ca.pem"), "--cert", str(work / f"node-{node_id}.pem"),
                "--key", str(work / f"node-{node_id}-key.pem"), "--spool", str(work / f"spool-{node_id}.db"),
                "--metrics-host", "127.0.0.1", "--metrics-port", "0",
                # Batches every 2 s (not the default 10) so the short demo shows a stream.
                "--energy-interval", "2", "--batch-ticks", "2",
            ] + ([] if load is None else ["--sim-load", str(load)])  # fmt: skip
            agents.append(subprocess.Popen(cmd))
            print(f"agent {node_id}: 8 simulated H200s at load {load if load is not None else 'idle (no process)'}")
        try:
            deadline = time.monotonic() + args.seconds
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(5.0, left))
                print(_progress(sched), flush=True)
        finally:
            for agent in agents:
                agent.terminate()
            for agent in agents:
                agent.wait(timeout=30)
            print(_report(sched))
            sched.stop()
    return 0


def _progress(sched: BackgroundScheduler) -> str:
    c = sched.scheduler.telemetry.fleet.counters
    return f"  ... {c.batches_accepted} batches, {c.samples} GPU samples, {c.energy_readings} energy readings accepted"


def _report(sched: BackgroundScheduler) -> str:
    fleet = sched.scheduler.telemetry.fleet
    lines = ["", f"{'node':<14}{'GPUs':>5}{'batches(seq)':>14}{'power now W':>13}{'energy J':>12}  health"]
    for node in sorted(fleet.nodes.values(), key=lambda n: n.node_id):
        power = sum(g.last_series.power_mw[-1] for g in node.gpus.values() if g.last_series and g.last_series.power_mw)
        energy = sum(g.energy.total_mj for g in node.gpus.values())
        unhealthy = [g.index for g in node.gpus.values() if g.unhealthy_reason]
        health = "ok" if not unhealthy else f"unhealthy GPUs {unhealthy}"
        row = f"{node.node_id:<14}{len(node.gpus):>5}{node.last_seq:>14}{power / 1e3:>13.0f}{energy / 1e3:>12.0f}"
        lines.append(f"{row}  {health}")
    c = fleet.counters
    lines.append(
        f"\naccepted {c.batches_accepted} batches / {c.samples} samples / {c.energy_readings} energy readings; "
        f"{c.batches_duplicate} duplicates dropped, {c.batches_rejected} rejected"
    )
    return "\n".join(lines)
