"""`neocloud bench ...`: performance targets, measured, printed as one JSON object."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="measure performance targets; prints one JSON object")
    kinds = p.add_subparsers(dest="bench", metavar="BENCH")
    kinds.required = True
    ingest = kinds.add_parser(
        "ingest",
        help="scheduler: GPU samples accepted per CPU-second (target >= 250,000)",
        description="Start a scheduler in this process and load-generator processes that stream 8-GPU batches "
        "over real gRPC; report samples accepted per CPU-second of the scheduler process.",
    )
    ingest.add_argument("--processes", type=int, default=2, help="load-generator processes (default: %(default)s)")
    ingest.add_argument("--streams", type=int, default=16, help="node streams per process (default: %(default)s)")
    ingest.add_argument(
        "--ticks-per-batch",
        type=int,
        default=10,
        help="1 Hz ticks per batch, 8 samples each; 10 is the agent's default (default: %(default)s)",
    )
    ingest.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default: %(default)s)")
    ingest.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default: %(default)s)")
    ingest.set_defaults(func=_ingest)
    agent = kinds.add_parser(
        "agent",
        help="agent: CPU percent of one core for one simulated 8-GPU node at 1 Hz (target < 0.5)",
        description="Run `neocloud agent --backend sim` as a child process streaming to a scheduler, scrape its "
        "/metrics, and report the agent process's CPU time as a percentage of one core.",
    )
    agent.add_argument("--seconds", type=float, default=60.0, help="measured seconds (default: %(default)s)")
    agent.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default: %(default)s)")
    agent.add_argument(
        "--scrape-interval", type=float, default=15.0, help="seconds between /metrics scrapes (default: %(default)s)"
    )
    agent.set_defaults(func=_agent)


def _ingest(args: argparse.Namespace) -> int:
    from neocloud.bench import ingest

    print(json.dumps(ingest.run(args.processes, args.streams, args.ticks_per_batch, args.seconds, args.warmup)))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from neocloud.bench import agent

    print(json.dumps(agent.run(args.seconds, args.warmup, args.scrape_interval)))
    return 0
