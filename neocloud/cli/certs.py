"""`neocloud certs ...`: make the CA, the scheduler's certificate and the nodes' certificates for mTLS."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from neocloud.wire import revocation, tls

logger = logging.getLogger(__name__)

DEFAULT_HOSTS = ("localhost", "127.0.0.1")

_OVERVIEW = """\
The agent <-> scheduler stream is mutual TLS. One private CA signs a server certificate for the
scheduler and one client certificate per node whose name is the node id; the scheduler accepts a
node's telemetry only for the node its certificate names. Key files are written mode 0600.

On a real cluster:
  1. neocloud certs ca --dir DIR           on a trusted machine; keep ca-key.pem there (or offline)
  2. neocloud certs scheduler --dir DIR --host sched.example.com
                                           copy ca.pem, scheduler.pem, scheduler-key.pem to the scheduler host
  3. neocloud certs node --dir DIR gpu-01  copy ca.pem, node-gpu-01.pem, node-gpu-01-key.pem to node gpu-01
ca-key.pem never leaves DIR: whoever holds it can impersonate any node.

A node whose certificate is lost or stolen:
  neocloud certs revoke --dir DIR gpu-01   adds its serial to DIR/crl.pem (signed by the CA); copy crl.pem
                                           beside the scheduler's ca.pem: the scheduler rereads it within a
                                           second, refuses the node (UNAUTHENTICATED) and ends its stream"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "certs",
        help="make the CA and the mTLS certificates for the scheduler and the nodes",
        description=_OVERVIEW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="certs_action", metavar="ACTION")
    actions.required = True

    ca = _action(
        actions,
        "ca",
        summary="create the private CA (ca.pem, ca-key.pem)",
        description="Create a private certificate authority in DIR: ca.pem (the CA certificate; copy it to the "
        "scheduler host and to every node) and ca-key.pem (its private key, mode 0600; keep it on this machine "
        "or offline, it signs every other certificate). Replacing the CA with --force invalidates every "
        "certificate it signed.",
    )
    ca.add_argument("--days", type=_days, default=3650, help="validity in days (default: %(default)s)")
    ca.set_defaults(func=_ca)

    sched = _action(
        actions,
        "scheduler",
        summary="issue the scheduler's server certificate (scheduler.pem, scheduler-key.pem)",
        description="Issue the scheduler's server certificate, signed by the CA in DIR: scheduler.pem and its "
        "private key scheduler-key.pem (mode 0600). Copy both, with ca.pem, to the scheduler host and pass them "
        "as `neocloud scheduler --ca ca.pem --cert scheduler.pem --key scheduler-key.pem`. Agents check that "
        "the name they dial is one of the --host values.",
    )
    sched.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="HOST",
        help="DNS name or IP address the agents use to reach the scheduler; repeat for several "
        f"(default: {' and '.join(DEFAULT_HOSTS)})",
    )
    sched.add_argument("--days", type=_days, default=825, help="validity in days (default: %(default)s)")
    sched.set_defaults(func=_scheduler)

    node = _action(
        actions,
        "node",
        summary="issue a client certificate per node (node-ID.pem, node-ID-key.pem)",
        description="Issue one client certificate per NODE_ID, signed by the CA in DIR: node-NODE_ID.pem and its "
        "private key node-NODE_ID-key.pem (mode 0600). Copy each pair, with ca.pem, to that node only and pass "
        "them as `neocloud agent --node-id NODE_ID --ca ca.pem --cert node-NODE_ID.pem --key "
        "node-NODE_ID-key.pem`; the scheduler accepts telemetry over that certificate for NODE_ID alone. "
        "Nothing is written unless every NODE_ID is valid and none of the files exists (see --force).",
    )
    node.add_argument(
        "node_ids",
        nargs="+",
        metavar="NODE_ID",
        help=f"1-{tls.NODE_ID_MAX_LEN} characters of letters, digits, '.', '_', '-', not starting with '.' or '-'",
    )
    node.add_argument("--days", type=_days, default=825, help="validity in days (default: %(default)s)")
    node.set_defaults(func=_node)

    revoke = actions.add_parser(
        "revoke",
        help="revoke a node's certificate (adds it to crl.pem beside the CA)",
        description="Add the certificate of each NODE_ID (node-NODE_ID.pem in DIR) or each hex SERIAL to DIR/crl.pem, "
        "a CRL signed by the CA key, rewritten atomically. The scheduler reads crl.pem beside its --ca file, "
        "rereads it when it changes (no restart), refuses a revoked node's telemetry with UNAUTHENTICATED and "
        "ends an open stream within seconds. Inspect it with `openssl crl -in DIR/crl.pem -text -noout`.",
    )
    revoke.add_argument("--dir", required=True, type=Path, help="directory holding the CA (and the node certificates)")
    revoke.add_argument("targets", nargs="+", metavar="NODE_ID|SERIAL")
    revoke.set_defaults(func=_revoke)


def _action(actions: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = actions.add_parser(name, help=summary, description=description)
    p.add_argument("--dir", required=True, type=Path, help="directory holding the CA and the files written")
    p.add_argument("--force", action="store_true", help="replace files that already exist")
    return p


def _days(text: str) -> int:
    days = int(text)
    if days < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {days}")
    return days


def _ca(args: argparse.Namespace) -> int:
    return _run(lambda: tls.write_ca(args.dir, force=args.force, days=args.days))


def _scheduler(args: argparse.Namespace) -> int:
    hosts = args.hosts or list(DEFAULT_HOSTS)
    return _run(lambda: tls.write_server(args.dir, hosts, force=args.force, days=args.days))


def _node(args: argparse.Namespace) -> int:
    node_ids = list(dict.fromkeys(args.node_ids))

    def write() -> list[Path]:
        # Check every id, the CA and every target before writing the first file.
        targets = [path for node_id in node_ids for path in tls.node_paths(args.dir, node_id)]
        tls.read_ca(args.dir)
        tls.check_writable(targets, args.force)
        return [path for node_id in node_ids for path in tls.write_node(args.dir, node_id, args.force, args.days)]

    return _run(write)


def _revoke(args: argparse.Namespace) -> int:
    try:
        for target in args.targets:
            serial, what = revocation.revoke(args.dir, target)
            print(f"revoked {what} (serial {revocation.fmt_serial(serial)}) in {args.dir / revocation.CRL}")
    except (ValueError, OSError) as e:
        print(f"neocloud certs: {e}", file=sys.stderr)
        return 2
    return 0


def _run(write: Callable[[], list[Path]]) -> int:
    try:
        paths = write()
    except (ValueError, OSError) as e:  # TlsConfigError and FileExistsError included
        print(f"neocloud certs: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
