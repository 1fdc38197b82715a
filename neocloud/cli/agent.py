"""`neocloud agent`: the node agent's options. The daemon (`neocloud.agent.main`: prometheus-client,
and pynvml for NVML) is imported only when it runs, so `--help` works without the agent extra."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading

from neocloud.agent.spool import DEFAULT_MAX_BYTES
from neocloud.cli.options import add_metrics_options, add_mtls_options, metrics_settings, mtls_settings

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent",
        help="run the node agent (reads GPUs, streams telemetry to the scheduler)",
        description="Run the node agent on a GPU host: read every GPU through NVML (or a simulation or a "
        "recorded trace), spool readings on disk and stream them to the scheduler over mTLS, and serve "
        "Prometheus metrics. Needs the agent extra: pip install 'neocloud[agent]'.",
    )
    p.add_argument(
        "--node-id", default=socket.gethostname(), help="this node's id; must match its certificate (default: hostname)"
    )
    p.add_argument(
        "--scheduler", default="localhost:7443", help="scheduler telemetry address HOST:PORT (default: %(default)s)"
    )
    p.add_argument(
        "--backend",
        choices=["auto", "nvml", "sim", "replay"],
        default="auto",
        help="GPU source; auto = NVML, refusing to start without it (default: %(default)s)",
    )
    p.add_argument("--sim-gpus", type=int, default=8, help="simulated GPUs (backend sim; default: %(default)s)")
    p.add_argument(
        "--sim-load", type=float, default=None, help="simulated load 0..1; omit for idle GPUs without a process"
    )
    p.add_argument(
        "--sim-follow-jobs",
        action="store_true",
        help="simulated GPUs show the neocloud jobs Ray runs on this node (the raylet labelled "
        "neocloud.io/node-id=NODE_ID) as their processes and draw their load (env NEOCLOUD_SIM_LOAD, default 0.9)",
    )
    p.add_argument(
        "--replay-trace",
        action="append",
        default=[],
        metavar="FILE",
        help="trace .jsonl to replay, one per GPU (backend replay; repeatable)",
    )
    p.add_argument(
        "--replay-speed",
        type=float,
        default=1.0,
        help="replay this many times faster than recorded (default: %(default)s)",
    )
    p.add_argument(
        "--tick", type=float, default=1.0, help="seconds between reads of the cheap fields (default: %(default)s)"
    )
    p.add_argument(
        "--energy-interval",
        type=float,
        default=10.0,
        help="seconds between energy-counter reads, ~3 ms per GPU each (default: %(default)s)",
    )
    p.add_argument(
        "--batch-ticks",
        type=int,
        default=10,
        help="ticks per batch sent; health events go at once (default: %(default)s, one batch per energy reading)",
    )
    p.add_argument(
        "--spool",
        default="/var/lib/neocloud/agent-spool.db",
        help="spool file for unacknowledged batches (default: %(default)s)",
    )
    p.add_argument(
        "--spool-max-mb",
        type=int,
        default=DEFAULT_MAX_BYTES // 2**20,
        help="spool bound in MiB; past it raw samples are dropped, energy readings never (default: %(default)s)",
    )
    p.add_argument(
        "--drain", type=float, default=5.0, help="on SIGTERM, seconds to wait for spooled batches to be acked"
    )
    # Not 9400: dcgm-exporter's default, often on the same GPU host.
    add_metrics_options(p, port=9402)
    tls = add_mtls_options(
        p,
        ca="the scheduler's certificate",
        own="this node's",
        cert_note=", named after the node id",
        insecure="only to a loopback scheduler",
    )
    tls.add_argument("--server-name", help="name in the scheduler's certificate, if it differs from the address")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neocloud.agent.gpu.types import BackendError
    from neocloud.agent.main import Agent, AgentConfig

    config = AgentConfig(
        node_id=args.node_id,
        scheduler=args.scheduler,
        backend=args.backend,
        sim_gpus=args.sim_gpus,
        sim_load=args.sim_load,
        sim_follow_jobs=args.sim_follow_jobs,
        replay_traces=tuple(args.replay_trace),
        replay_speed=args.replay_speed,
        tick_s=args.tick,
        energy_interval_s=args.energy_interval,
        batch_ticks=args.batch_ticks,
        spool_path=args.spool,
        spool_max_bytes=args.spool_max_mb * 2**20,
        **metrics_settings(args),
        **mtls_settings(args),
        server_name=args.server_name,
    )
    try:
        agent = Agent(config)
    except (BackendError, ValueError, OSError) as e:
        logger.error("agent cannot start: %s", e)
        return 2
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    agent.start()
    stopped.wait()
    agent.stop(drain_s=args.drain)
    logger.info("agent stopped; %d batches stay spooled for the next start", agent.spool.stats().batches)
    return 0
