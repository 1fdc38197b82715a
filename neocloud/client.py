"""The Python client of the scheduler's API: one channel (TLS unless told otherwise),
the bearer token to call with, the JobService, AdminService, UsageService, NodeService
and ArtifactService stubs, and `upload_workdir` (pack a directory, upload it, get its digest
for JobSpec.workdir_digest).

    from neocloud.client import CALL_TIMEOUT_S, Client
    from neocloud.v1 import jobs_pb2

    with Client(server="scheduler.example.com:7444", token="nct_...", ca="ca.pem") as client:
        for job in client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=CALL_TIMEOUT_S).jobs:
            print(job.job_id, jobs_pb2.JobState.Name(job.state))

The `neocloud` command line (neocloud.cli) is built on it; nothing here parses arguments or prints.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar

import grpc

from neocloud.clientconfig import ClientConfigError, resolve
from neocloud.domain.archive import ArchiveLimits, pack
from neocloud.v1 import admin_pb2_grpc, artifacts_pb2, artifacts_pb2_grpc, jobs_pb2_grpc, nodes_pb2_grpc, usage_pb2_grpc
from neocloud.wire import tls
from neocloud.wire.netaddr import is_loopback, split_host_port

DEFAULT_SERVER = "localhost:7443"
CALL_TIMEOUT_S = 30.0
UPLOAD_CHUNK_BYTES = 1 << 20  # the most the server takes in one UploadChunk

PathArg = str | os.PathLike[str]

__all__ = ["CALL_TIMEOUT_S", "DEFAULT_SERVER", "Client", "ClientConfigError"]

# Calls that change nothing, or change it once however often they come: retried on
# UNAVAILABLE (a restart, a dropped connection). Submit is not: it is idempotent only
# with a client_request_id, which a caller may leave empty.
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = {
    "neocloud.v1.JobService": ("Get", "List", "Cancel"),
    "neocloud.v1.AdminService": (
        "ListTenants", "ListTokens", "ListContracts", "GetSettings", "ListCordons", "ListAuditEvents",
        "ListRateCards",
    ),
    "neocloud.v1.UsageService": ("GetInvoice", "GetUsage", "ExportUsage"),  # a stream: retried before its first page
    "neocloud.v1.NodeService": ("ListNodes",),
}  # fmt: skip
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.2s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {"name": [{"service": s, "method": m} for m in methods], "retryPolicy": RETRY_POLICY}
            for s, methods in IDEMPOTENT_METHODS.items()
        ]
    }
)
CHANNEL_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG)]


class Client:
    """A channel to the scheduler and the bearer token to call it with.

    `server` (HOST:PORT) defaults to $NEOCLOUD_SERVER, then DEFAULT_SERVER; `token` to
    $NEOCLOUD_TOKEN. The channel is TLS, trusting `ca` (a PEM file; the system CAs without
    it), and presents `cert` and `key` if the scheduler wants a client certificate (those
    need `ca` too). `insecure=True` is plain-text gRPC, allowed to a loopback server only.
    Raises ClientConfigError; connects lazily, on the first call.

    Call a stub with `metadata=client.metadata` (the token) and a timeout, e.g. CALL_TIMEOUT_S.
    Idempotent calls (IDEMPOTENT_METHODS) are retried on UNAVAILABLE, up to 4 attempts.
    `Client.from_config()` takes its settings from the environment and the config file too.
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
            grpc.insecure_channel(server, CHANNEL_OPTIONS)
            if credentials is None
            else grpc.secure_channel(server, credentials, CHANNEL_OPTIONS)
        )
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)
        self.nodes = nodes_pb2_grpc.NodeServiceStub(self.channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)

    @classmethod
    def from_config(cls, config_file: PathArg | None = None, **given: Any) -> Client:
        """A client from `given` settings (server, token, token_file, ca, cert, key, insecure),
        then NEOCLOUD_* variables, then `config_file` (default: $NEOCLOUD_CONFIG, else
        ~/.config/neocloud/config.toml if there is one); see neocloud.clientconfig."""
        s = resolve(given, os.environ, config_file)
        return cls(server=s.server, token=s.token, ca=s.ca, cert=s.cert, key=s.key, insecure=s.insecure)

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

    def upload_workdir(self, directory: PathArg, timeout: float | None = None) -> artifacts_pb2.Artifact:
        """Pack `directory` (minus what its .neocloudignore names; neocloud.domain.archive) and upload
        it; the reply's digest goes in JobSpec.workdir_digest. An identical directory uploads to the
        same digest and is stored once. InvalidArgumentError for what cannot be packed (a device,
        a fifo, a symlink pointing out), grpc.RpcError for what the server refuses."""
        with tempfile.TemporaryFile() as archive:
            pack(Path(directory), archive, ArchiveLimits())
            archive.seek(0)
            return self.artifacts.Upload(_chunks(archive), metadata=self.metadata, timeout=timeout)

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


def _chunks(archive: IO[bytes]) -> Iterator[artifacts_pb2.UploadChunk]:
    while data := archive.read(UPLOAD_CHUNK_BYTES):
        yield artifacts_pb2.UploadChunk(data=data)
