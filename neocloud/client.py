"""What every tenant/operator subcommand shares: the connection options (server,
token, TLS), the channel, error reporting and output (tables or JSON)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from neocloud.v1 import admin_pb2_grpc, jobs_pb2_grpc, usage_pb2_grpc
from neocloud.wire import tls
from neocloud.wire.netaddr import is_loopback, split_host_port

logger = logging.getLogger(__name__)

DEFAULT_SERVER = "localhost:7443"
CALL_TIMEOUT_S = 30.0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """The command line cannot work as given (exit status 2)."""


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with the options every client subcommand takes."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--server", help=f"scheduler HOST:PORT (env NEOCLOUD_SERVER; default {DEFAULT_SERVER})")
    g.add_argument("--token", help="API token (env NEOCLOUD_TOKEN)")
    g.add_argument("--ca", help="CA certificate (PEM) that signed the scheduler's certificate (default: system CAs)")
    g.add_argument("--cert", help="client certificate (PEM), if the scheduler asks for one")
    g.add_argument("--key", help="private key (PEM) of --cert")
    g.add_argument("--insecure", action="store_true", help="plain-text gRPC, to a loopback scheduler only")
    g.add_argument("--json", action="store_true", help="print JSON (proto3 JSON mapping) instead of tables")
    return p


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials:
    if args.cert or args.key:
        if not (args.ca and args.cert and args.key):
            raise UsageError("a client certificate needs --ca, --cert and --key together")
        return tls.channel_credentials(args.ca, args.cert, args.key)
    root = None
    if args.ca:
        try:
            root = Path(args.ca).read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read the CA certificate {args.ca}: {e.strerror or e}") from e
    return grpc.ssl_channel_credentials(root_certificates=root)


class Connection:
    """A channel to the scheduler and the bearer token to call it with."""

    def __init__(self, args: argparse.Namespace) -> None:
        server = args.server or os.environ.get("NEOCLOUD_SERVER") or DEFAULT_SERVER
        token = args.token or os.environ.get("NEOCLOUD_TOKEN")
        if not token:
            raise UsageError("no API token: pass --token or set NEOCLOUD_TOKEN (an operator makes one)")
        try:
            host, _ = split_host_port(server)
        except ValueError as e:
            raise UsageError(f"--server: {e}") from e
        if args.insecure:
            if not is_loopback(host):
                raise UsageError(f"--insecure is only allowed to a loopback scheduler, not {host!r}; use TLS (--ca)")
            self.channel = grpc.insecure_channel(server)
        else:
            self.channel = grpc.secure_channel(server, _credentials(args))
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


Handler = Callable[[argparse.Namespace, Connection], int | None]


def command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: open the connection, and turn errors into one line on stderr and an exit status."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            conn = Connection(args)
        except (UsageError, tls.TlsConfigError) as e:
            print(f"neocloud: {e}", file=sys.stderr)
            return EXIT_USAGE
        try:
            return handler(args, conn) or 0
        except UsageError as e:
            print(f"neocloud: {e}", file=sys.stderr)
            return EXIT_USAGE
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
            details = e.details() if hasattr(e, "details") else str(e)
            print(f"neocloud: {code.name}: {details}", file=sys.stderr)
            return EXIT_RPC_ERROR
        except KeyboardInterrupt:
            return 130
        finally:
            conn.close()

    return run


# --- output ----------------------------------------------------------------------------------------


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


def print_json(value: Message | Sequence[Message] | dict[str, Any]) -> None:
    if isinstance(value, Message):
        data: Any = to_dict(value)
    elif isinstance(value, dict):
        data = value
    else:
        data = [to_dict(m) for m in value]
    print(json.dumps(data, indent=2, sort_keys=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_fields(fields: Sequence[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}} {'' if value is None else value}")


def fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def enum_word(name: str, prefix: str) -> str:
    """JOB_STATE_QUEUED -> queued."""
    return name.removeprefix(prefix).lower()


def parse_time(text: str) -> float:
    """'now', Unix seconds, or ISO 8601 (UTC unless it names a zone) -> Unix seconds."""
    if text == "now":
        return dt.datetime.now(dt.UTC).timestamp()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'now', Unix seconds or an ISO 8601 time") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
