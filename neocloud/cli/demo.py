"""`neocloud demo`: its options. The demo (`neocloud.demo.main`: the scheduler, Ray and agents on
this machine) is imported only when it runs, so `--help` works without the demo extra."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a whole neocloud on this machine through a scenario and show it live",
        description="Start the scheduler (SQLite, an embedded multi-node Ray cluster) and --nodes simulated 8-GPU "
        "nodes, each agent a child process streaming over mTLS on loopback, then play a scenario through the job "
        "API: the lab's internal demand declines, tenants buy the freed capacity (reserved on a power contract, "
        "spot filling the rest), an internal spike preempts spot work with notice. Shows the fleet live and ends "
        "with each tenant's jobs, their invoices rated from the ledger (deploy/config/ratecard.example.yaml), the "
        "fleet split and the Prometheus endpoints. Ctrl-C stops everything (exit 130). Needs the demo extra: "
        "pip install 'neocloud[demo]'.",
    )
    p.add_argument("--nodes", type=int, default=4, help="simulated 8-GPU nodes, 1-32 (default: %(default)s)")
    p.add_argument("--minutes", type=float, help="demo length in demo minutes (default: the scenario's, 60)")
    p.add_argument("--speed", type=float, help="demo minutes per wall minute (default: the scenario's, 40)")
    p.add_argument(
        "--scenario",
        metavar="FILE",
        help="scenario YAML (default: the one in the package; deploy/config/demo-scenario.yaml in the repository)",
    )
    p.add_argument(
        "--work-dir",
        metavar="DIR",
        help="keep the site's files here for a look afterwards: store, job logs, certificates, operator token "
        "(an empty or new directory; default: a temporary one, removed at the end)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neocloud.demo.main import run as play

    return play(args)
