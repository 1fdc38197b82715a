"""What the tenant and operator subcommands share: the connection options (server, token,
TLS), running a handler with a `neocloud.client.Client` (errors become one line on stderr
and an exit status), and output (tables or JSON)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from neocloud.client import DEFAULT_SERVER, Client, ClientConfigError
from neocloud.wire import tls

EXIT_RPC_ERROR = 1
EXIT_USAGE = 2

M = TypeVar("M", bound=Message)


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


class _CliClient(Client):
    argument_style = "--{}"  # its errors name the options above


def _client(args: argparse.Namespace) -> Client:
    # An empty option counts as not given (the environment or the default applies), as it always has.
    return _CliClient(
        server=args.server or None,
        token=args.token or None,
        ca=args.ca or None,
        cert=args.cert or None,
        key=args.key or None,
        insecure=args.insecure,
    )


Handler = Callable[[argparse.Namespace, Client], int | None]


def command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler: open the client, and turn errors into one line on stderr and an exit status."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            client = _client(args)
        except (ClientConfigError, tls.TlsConfigError) as e:
            print(f"neocloud: {e}", file=sys.stderr)
            return EXIT_USAGE
        try:
            return handler(args, client) or 0
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
            client.close()

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


def show(args: argparse.Namespace, message: Message | None, text: str) -> None:
    """`message` as JSON with --json (an empty object for None), else `text`."""
    if args.json:
        print_json(message if message is not None else {})
    else:
        print(text)


def show_list(
    args: argparse.Namespace, messages: Iterable[M], headers: Sequence[str], row: Callable[[M], Sequence[object]]
) -> None:
    """`messages` as a JSON list with --json, else a table under `headers` with one `row(message)` each."""
    items = list(messages)
    if args.json:
        print_json(items)
    else:
        print_table(headers, [row(m) for m in items])


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
