"""The `neocloud` command: one entry point, a subcommand per role.

Building the parser imports only what the base install has (grpcio, protobuf, cryptography,
pyyaml): a tenant with `pip install neocloud` gets every command's --help and the client commands.
The daemons' code is imported when their command runs; without its extra that command says which
extra to install and exits 2."""

from __future__ import annotations

import argparse
import logging
import sys

from neocloud import __version__

# Command -> the extra it needs, and the modules only the extras install.
COMMAND_EXTRAS = {"agent": "agent", "scheduler": "scheduler", "demo": "demo", "bench": "demo"}
EXTRA_MODULES = frozenset({"ray", "pynvml", "prometheus_client", "grpc_health", "grpc_reflection"})


def build_parser() -> argparse.ArgumentParser:
    from neocloud.bench import cli as bench_cli
    from neocloud.cli import agent as agent_cli
    from neocloud.cli import billing as billing_cli
    from neocloud.cli import certs as certs_cli
    from neocloud.cli import demo as demo_cli
    from neocloud.cli import jobs as client_cli
    from neocloud.cli import meter as meter_cli
    from neocloud.cli import nodes as nodes_cli
    from neocloud.cli import scheduler as scheduler_cli

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
    agent_cli.add_parser(subparsers)
    scheduler_cli.add_parser(subparsers)
    certs_cli.add_parser(subparsers)
    bench_cli.add_parser(subparsers)
    client_cli.add_parser(subparsers)
    nodes_cli.add_parser(subparsers)
    demo_cli.add_parser(subparsers)
    meter_cli.add_parser(subparsers)
    billing_cli.add_parser(subparsers)
    return parser


def missing_extra(command: str, error: ModuleNotFoundError) -> str | None:
    """The line to print when `command` failed for want of its extra; None when the module
    missing is not one an extra installs (a broken install, not a missing extra)."""
    extra = COMMAND_EXTRAS.get(command)
    module = (error.name or "").partition(".")[0]
    if extra is None or module not in EXTRA_MODULES:
        return None
    return f"neocloud {command} needs the {extra} extra ({module} is not installed): pip install 'neocloud[{extra}]'"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        code = args.func(args)
    except ModuleNotFoundError as e:
        message = missing_extra(args.command, e)
        if message is None:
            raise
        print(message, file=sys.stderr)
        code = 2
    sys.exit(code)
