"""What the tenant and operator subcommands share: the connection options (server, token,
TLS, config file), running a handler with a `neocloud.client.Client` (errors become one line
on stderr and an exit status), and output (tables or JSON: enum values as the lower-case
words the options take, times as RFC 3339 UTC strings)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from neocloud.client import DEFAULT_SERVER, Client, ClientConfigError
from neocloud.clientconfig import CONFIG_ENV, ENV_VARS
from neocloud.wire import tls

EXIT_RPC_ERROR = 1
EXIT_USAGE = 2

M = TypeVar("M", bound=Message)


class UsageError(Exception):
    """The command line cannot work as given (exit status 2)."""


# Wrapped here: a command with a raw help formatter (for an epilog table) prints it as it is.
CONNECTION_NOTE = textwrap.fill(
    "Each setting comes from its option, else its environment variable, else the config file: --config, "
    f"else ${CONFIG_ENV}, else $XDG_CONFIG_HOME/neocloud/config.toml (by default ~/.config/neocloud/config.toml), "
    "TOML with the options' names as keys ('_' for '-'), paths relative to the file, e.g. "
    'server = "api.example.com:7444", ca = "ca.pem", token_file = "token". '
    "--json prints enum values as the words the options take (running, spot), times as RFC 3339 UTC strings "
    "(2026-12-04T17:00:00Z), and null for a value not set.",
    78,
)


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with the options every client subcommand takes (a subcommand's positional
    arguments may use any name: these store under names of their own)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection (option > environment > config file)", description=CONNECTION_NOTE)
    env = ENV_VARS
    g.add_argument("--config", metavar="FILE", help=f"the config file (env {CONFIG_ENV})")
    g.add_argument(
        "--server", metavar="HOST:PORT", help=f"the scheduler's API (env {env['server']}; default {DEFAULT_SERVER})"
    )
    g.add_argument("--token", help=f"API token (env {env['token']})")
    g.add_argument("--token-file", metavar="FILE", help=f"read the API token from FILE (env {env['token_file']})")
    g.add_argument(
        "--ca",
        dest="ca_file",
        metavar="PEM",
        help=f"CA certificate that signed the scheduler's (env {env['ca']}; default: the system CAs)",
    )
    g.add_argument(
        "--cert", dest="cert_file", metavar="PEM", help=f"client certificate, for the mTLS port (env {env['cert']})"
    )
    g.add_argument("--key", dest="key_file", metavar="PEM", help=f"private key of --cert (env {env['key']})")
    g.add_argument(
        "--insecure", action="store_true", help=f"plain-text gRPC, to a loopback scheduler only (env {env['insecure']})"
    )
    g.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


class _CliClient(Client):
    argument_style = "--{}"  # its errors name the options above


def _client(args: argparse.Namespace) -> Client:
    # An empty option counts as not given (the environment or the config file applies).
    return _CliClient.from_config(
        args.config or None,
        server=args.server,
        token=args.token,
        token_file=args.token_file,
        ca=args.ca_file,
        cert=args.cert_file,
        key=args.key_file,
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


# Double fields that hold a Unix time; the protos name them so ("at", "*_at", "start", "end").
_TIME_FIELD = re.compile(r"(.+_)?at|start|end")


def to_dict(message: Message) -> dict[str, Any]:
    """`message` with every field (an unset optional one as None), enums as words, times as RFC 3339."""
    out: dict[str, Any] = {}
    for field in cast(Descriptor, message.DESCRIPTOR).fields:
        value = getattr(message, field.name)
        if field.has_presence and not field.is_repeated and not message.HasField(field.name):
            out[field.name] = None
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in sorted(value.items())}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        return to_dict(value)
    if field.enum_type is not None:
        return enum_value_word(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_DOUBLE and _TIME_FIELD.fullmatch(field.name):
        return rfc3339(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return value.decode("utf-8", errors="replace")
    return value


def enum_value_word(enum: EnumDescriptor, number: int) -> str:
    """JobState 2 -> "running"; a number the enum does not name -> its digits."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
    return enum_word(value.name, prefix)


def rfc3339(t: float) -> str:
    """Unix seconds -> "2026-12-04T17:00:00Z" (milliseconds when there are any)."""
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    text = when.isoformat(timespec="milliseconds" if when.microsecond >= 1000 else "seconds")
    return text.replace("+00:00", "Z")


def print_json(value: Message | Sequence[Message] | dict[str, Any]) -> None:
    if isinstance(value, Message):
        data: Any = to_dict(value)
    elif isinstance(value, dict):
        data = value
    else:
        data = [to_dict(m) for m in value]
    print(json.dumps(data, indent=2, sort_keys=True))


def print_json_line(message: Message) -> None:
    """One JSON object on one line (JSON Lines), flushed: for a stream of events."""
    print(json.dumps(to_dict(message), sort_keys=True), flush=True)


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
