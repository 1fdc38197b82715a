"""The Python client of the scheduler's API: one channel (TLS unless told otherwise),
the bearer token to call with, and the JobService, AdminService and UsageService stubs.

    from neocloud.client import CALL_TIMEOUT_S, Client
    from neocloud.v1 import jobs_pb2

    with Client(server="scheduler.example.com:7443", token="nct_...", ca="ca.pem") as client:
        for job in client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S).jobs:
            print(job.job_id, jobs_pb2.JobState.Name(job.state))

The `neocloud` command line (neocloud.cli) is built on it; nothing here parses arguments or prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import ClassVar

import grpc

from neocloud.v1 import admin_pb2_grpc, jobs_pb2_grpc, usage_pb2_grpc
from neocloud.wire import tls
from neocloud.wire.netaddr import is_loopback, split_host_port

DEFAULT_SERVER = "localhost:7443"
CALL_TIMEOUT_S = 30.0

PathArg = str | os.PathLike[str]


class ClientConfigError(ValueError):
    """The client cannot be set up as given: no token, a malformed server address, `insecure`
    to a host that is not loopback, or an unusable certificate file; the message says what to fix.

    A ValueError, as `neocloud.wire.tls.TlsConfigError` is, because the fault is in the values
    passed to the constructor (or the environment), found before anything is sent. It is not a
    `NeocloudError`: that hierarchy is what the scheduler reports about requests, and it maps
    to gRPC status codes; a call that reaches the server and fails raises `grpc.RpcError`.
    """


class Client:
    """A channel to the scheduler and the bearer token to call it with.

    `server` (HOST:PORT) defaults to $NEOCLOUD_SERVER, then DEFAULT_SERVER; `token` to
    $NEOCLOUD_TOKEN. The channel is TLS, trusting `ca` (a PEM file; the system CAs without
    it), and presents `cert` and `key` if the scheduler wants a client certificate (those
    need `ca` too). `insecure=True` is plain-text gRPC, allowed to a loopback server only.
    Raises ClientConfigError; connects lazily, on the first call.

    Call a stub with `metadata=client.metadata` (the token) and a timeout, e.g. CALL_TIMEOUT_S.
    """

    argument_style: ClassVar[str] = "`{}`"
    """How error messages name an argument; the CLI's subclass says "--{}", naming its options."""

    def __init__(
        self,
        *,
        server: str | None = None,
        token: str | None = None,
        ca: PathArg | None = None,
        cert: PathArg | None = None,
        key: PathArg | None = None,
        insecure: bool = False,
    ) -> None:
        arg = self.argument_style.format
        if server is None:
            server = os.environ.get("NEOCLOUD_SERVER") or DEFAULT_SERVER
        if token is None:
            token = os.environ.get("NEOCLOUD_TOKEN")
        if not token:
            raise ClientConfigError(f"no API token: pass {arg('token')} or set NEOCLOUD_TOKEN (an operator makes one)")
        try:
            host, _ = split_host_port(server)
        except ValueError as e:
            raise ClientConfigError(f"{arg('server')}: {e}") from e
        if insecure:
            if not is_loopback(host):
                raise ClientConfigError(
                    f"{arg('insecure')} is only allowed to a loopback scheduler, not {host!r}; use TLS ({arg('ca')})"
                )
            credentials = None
        else:
            credentials = self._credentials(ca, cert, key)
        self.server = server
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
        self.channel = (
            grpc.insecure_channel(server) if credentials is None else grpc.secure_channel(server, credentials)
        )
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)

    def _credentials(self, ca: PathArg | None, cert: PathArg | None, key: PathArg | None) -> grpc.ChannelCredentials:
        arg = self.argument_style.format
        if cert is not None or key is not None:
            if ca is None or cert is None or key is None:
                raise ClientConfigError(
                    f"a client certificate needs {arg('ca')}, {arg('cert')} and {arg('key')} together"
                )
            try:
                return tls.channel_credentials(ca, cert, key)
            except tls.TlsConfigError as e:
                raise ClientConfigError(str(e)) from e
        root = None
        if ca is not None:
            try:
                root = Path(ca).read_bytes()
            except OSError as e:
                raise ClientConfigError(f"cannot read the CA certificate {os.fspath(ca)}: {e.strerror or e}") from e
        return grpc.ssl_channel_credentials(root_certificates=root)

    def close(self) -> None:
        """Close the channel (again is harmless); calls in flight are cancelled."""
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(server={self.server!r})"
