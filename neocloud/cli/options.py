"""Options that several command groups share, defined once: mTLS files and the --insecure
escape hatch, where /metrics listens, and the scheduler's API port for people. Imports
nothing but argparse."""

from __future__ import annotations

import argparse
from typing import Any


def add_mtls_options(
    p: argparse.ArgumentParser, *, ca: str, own: str, insecure: str, cert_note: str = ""
) -> argparse._ArgumentGroup:
    """--ca/--cert/--key and --insecure, in a group the caller may add to. `ca`: whose certificates
    the CA signed; `own`: whose certificate and key these are; `insecure`: where --insecure may go."""
    g = p.add_argument_group("mTLS (make the files with `neocloud certs`)")
    g.add_argument("--ca", metavar="PEM", help=f"CA certificate that signed {ca}")
    g.add_argument("--cert", metavar="PEM", help=f"{own} certificate{cert_note}")
    g.add_argument("--key", metavar="PEM", help=f"{own} private key")
    g.add_argument("--insecure", action="store_true", help=f"plain-text gRPC {insecure}, for development")
    return g


def mtls_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What add_mtls_options parsed, under the names the daemons' configs use."""
    return {"ca_file": args.ca, "cert_file": args.cert, "key_file": args.key, "insecure": args.insecure}


def add_metrics_options(p: argparse.ArgumentParser, *, port: int) -> None:
    """--metrics-host and --metrics-port for the Prometheus endpoint."""
    g = p.add_argument_group("Prometheus")
    g.add_argument("--metrics-host", default="0.0.0.0", help="address for /metrics (default: %(default)s)")
    g.add_argument(
        "--metrics-port", type=int, default=port, help="port for /metrics; 0 picks a free one (default: %(default)s)"
    )


def metrics_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What add_metrics_options parsed, under the names the daemons' configs use."""
    return {"metrics_host": args.metrics_host, "metrics_port": args.metrics_port}


def add_api_options(p: argparse.ArgumentParser) -> None:
    """--api-listen, --api-cert and --api-key: the scheduler's port for people's tools."""
    g = p.add_argument_group("API port for people (server TLS and a token; no client certificate, no telemetry)")
    g.add_argument("--api-listen", metavar="HOST:PORT", help="e.g. 0.0.0.0:7444 (default: no API port)")
    g.add_argument("--api-cert", metavar="PEM", help="its server certificate chain (e.g. from a public CA)")
    g.add_argument("--api-key", metavar="PEM", help="the private key of --api-cert")


def api_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What add_api_options parsed, under the names SchedulerConfig uses."""
    return {"api_listen": args.api_listen, "api_cert_file": args.api_cert, "api_key_file": args.api_key}
