"""The `neocloud` command: one entry point, a subcommand per role."""

from __future__ import annotations

import argparse
import logging
import sys

from neocloud import __version__


def build_parser() -> argparse.ArgumentParser:
    from neocloud.agent import main as agent_main
    from neocloud.bench import cli as bench_cli
    from neocloud.cli import certs as certs_cli
    from neocloud.scheduler import server as scheduler_server

    parser = argparse.ArgumentParser(
        prog="neocloud",
        description="Sell an AI lab's spare GPU capacity: node agents read GPUs through NVML and stream "
        "telemetry to a scheduler over mTLS gRPC.",
    )
    parser.add_argument("--version", action="version", version=f"neocloud {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: %(default)s)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    agent_main.add_parser(subparsers)
    scheduler_server.add_parser(subparsers)
    certs_cli.add_parser(subparsers)
    bench_cli.add_parser(subparsers)
    from neocloud.cli import billing as billing_cli
    from neocloud.cli import jobs as client_cli
    from neocloud.cli import meter
    from neocloud.demo import main as demo

    client_cli.add_parser(subparsers)
    demo.add_parser(subparsers)
    meter.add_parser(subparsers)
    billing_cli.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    sys.exit(args.func(args))
