"""The scheduler's /metrics protection options: HTTPS, a bearer token, and how tenants
are named in its series. Imports nothing but argparse (no scheduler code for --help)."""

from __future__ import annotations

import argparse
from typing import Any

TENANT_LABEL_MODES = ("name", "hash", "off")  # scheduler.metrics.TENANT_LABEL_MODES; a test keeps them equal


def add_scheduler_metrics_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("/metrics protection (its series name tenants and their bills)")
    g.add_argument("--metrics-cert", metavar="PEM", help="serve /metrics over HTTPS with this certificate chain")
    g.add_argument("--metrics-key", metavar="PEM", help="the private key of --metrics-cert")
    g.add_argument(
        "--metrics-token-file",
        metavar="FILE",
        help="scrapes must send 'Authorization: Bearer TOKEN' with the token in FILE (one line, 16+ "
        "characters); others get 401",
    )
    g.add_argument(
        "--metrics-tenant-labels",
        choices=TENANT_LABEL_MODES,
        default="name",
        help="tenant label of per-tenant series: the name, a SHA-256 prefix of it, or off (summed over "
        "tenants, label empty) (default: %(default)s)",
    )


def scheduler_metrics_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What add_scheduler_metrics_options parsed, under SchedulerConfig's names."""
    return {
        "metrics_cert_file": args.metrics_cert,
        "metrics_key_file": args.metrics_key,
        "metrics_token_file": args.metrics_token_file,
        "metrics_tenant_labels": args.metrics_tenant_labels,
    }
