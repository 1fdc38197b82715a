"""`neocloud scheduler`: the control plane's gRPC server (telemetry ingest and
the standard health service), its SQLite store and its /metrics; optionally a
second port for people (the API over ordinary server TLS, no telemetry)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Gauge

from neocloud.scheduler.api.auth import Authenticator
from neocloud.scheduler.api.errors import ErrorInterceptor
from neocloud.scheduler.api.logs import ExecutorLogs, NoLogs
from neocloud.scheduler.api.services import SERVICE_NAMES, add_api_services
from neocloud.scheduler.artifacts import LocalArtifactStore, root_beside
from neocloud.scheduler.artifacts.store import Released
from neocloud.scheduler.billing.ratecard import load_ratecard
from neocloud.scheduler.billing_runner import BillingRunner
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.executor.types import Executor
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.ingest.service import add_to_server as add_telemetry_to_server
from neocloud.scheduler.liveness import Heartbeat
from neocloud.scheduler.metrics import MeteringCollector, SchedulerCollector, TenantLabels, WorkdirCollector
from neocloud.scheduler.metrics_http import MetricsServer
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.shortfalls import ShortfallStore
from neocloud.scheduler.store.workdirs import WorkdirStore
from neocloud.wire import revocation, tls
from neocloud.wire.netaddr import is_loopback, split_host_port

logger = logging.getLogger(__name__)

# Server-wide limits (the README's reliability section lists them with their statuses).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # either way; larger: RESOURCE_EXHAUSTED
# Calls in progress at once, telemetry streams and Watch/Logs streams included; the
# next one gets RESOURCE_EXHAUSTED. One stream per node: far above any site's nodes.
MAX_CONCURRENT_RPCS = 10_000
# Calls at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a client's
# further calls wait for one to end, so one peer cannot take every slot over one connection.
MAX_STREAMS_PER_CONNECTION = 100
# Calls in progress from one host, over all its connections (scheduler/api/calls.py); the
# next one gets RESOURCE_EXHAUSTED. Nodes behind one NAT or proxy count as one host.
MAX_CALLS_PER_PEER = 1000
# How often the CRL beside --ca is checked for a change; a revoked node's open stream ends this soon.
REVOCATION_POLL_S = 1.0
# How often workdirs unused for workdir_retention_s are released (and once at start).
WORKDIR_SWEEP_S = 600.0
SERVER_OPTIONS = [
    # Agents ping every 20 s to notice a dead peer; allow it.
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
]


@dataclass(frozen=True)
class SchedulerConfig:
    listen: str = "0.0.0.0:7443"
    db_path: str = "/var/lib/neocloud/scheduler.db"
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = 9401
    # /metrics over HTTPS (both set), behind a bearer token (its file), and how tenants are named there.
    metrics_cert_file: str | None = None
    metrics_key_file: str | None = None
    metrics_token_file: str | None = None
    metrics_tenant_labels: TenantLabels = "name"
    insecure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    commit_interval_s: float = 0.1
    controller_interval_s: float = 0.5
    meter_interval_s: float = 10.0
    rate_card_path: str | None = None  # prices for the billed-amount metrics (neocloud invoice takes its own)
    # Create the store when db_path does not exist (`--init`). Off unless asked for, here as on the
    # command line: a path that is not there is more often a mistake than a new site, and a program
    # that makes throwaway sites (tests, demo, benchmarks) says so once.
    init: bool = False
    # The API port for people (`--api-listen`): server TLS with api_cert_file/api_key_file, bearer
    # tokens, no client certificate, no telemetry. None: no such port. insecure: plain text, loopback.
    api_listen: str | None = None
    api_cert_file: str | None = None
    api_key_file: str | None = None
    # Tenant work on nodes that cannot sandbox its ranks (`--allow-unsandboxed-tenants`, a laptop
    # demo): the executor is told so; here it is logged at start and exported as a metric.
    allow_unsandboxed_tenants: bool = False


def write_bootstrap_token(store: JobStore, db_path: str) -> Path | None:
    """The first start (or `--init-only`) makes an operator token and leaves it, readable
    by the scheduler's user only, beside the store (never in the log)."""
    token = store.bootstrap_operator_token("bootstrap")
    if token is None or db_path == ":memory:":
        return None
    path = Path(db_path).with_name("operator-token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    logger.warning("first start: an operator token was written to %s (use it, then store it safely)", path)
    return path


class Scheduler:
    """The scheduler on the running asyncio loop. With an executor it also runs
    jobs (the controller); without one it ingests telemetry and serves the API."""

    def __init__(self, config: SchedulerConfig, executor: Executor | None = None) -> None:
        host, _ = split_host_port(config.listen)
        if config.insecure and not is_loopback(host):
            raise ValueError(f"--insecure only listens on loopback, not {host!r}; use mTLS")
        if not config.insecure and not (config.ca_file and config.cert_file and config.key_file):
            raise ValueError("mTLS needs --ca, --cert and --key (make them with `neocloud certs`), or --insecure")
        if config.api_listen is not None:
            api_host, _ = split_host_port(config.api_listen)
            if config.insecure and not is_loopback(api_host):
                raise ValueError(f"--insecure only listens on loopback, not {api_host!r}; give --api-cert/--api-key")
            if not config.insecure and not (config.api_cert_file and config.api_key_file):
                raise ValueError("--api-listen needs --api-cert and --api-key (a certificate people's tools trust)")
        self.config = config
        self.db = open_db(config.db_path, create=config.init)
        # gRPC Python checks no CRL at the handshake: ingest refuses a revoked node at its first call.
        self.revocations = revocation.RevocationList(config.ca_file) if config.ca_file and not config.insecure else None
        self.telemetry = TelemetryService(
            Fleet.load(self.db),
            self.db,
            require_peer_identity=not config.insecure,
            commit_interval_s=config.commit_interval_s,
            revocations=self.revocations,
        )
        # The job store has its own connection: telemetry commits on another thread.
        self.jobs = JobStore(open_db(config.db_path))
        self.executor = executor
        self.controller = (
            Controller(
                self.jobs,
                self.telemetry.fleet,
                executor,
                interval_s=config.controller_interval_s,
                shortfalls=ShortfallStore(open_db(config.db_path)) if config.db_path != ":memory:" else None,
                heartbeat=Heartbeat(Path(f"{config.db_path}.heartbeat")) if config.db_path != ":memory:" else None,
            )
            if executor is not None
            else None
        )
        self.bootstrap_token_file = write_bootstrap_token(self.jobs, config.db_path)
        self.card = load_ratecard(config.rate_card_path) if config.rate_card_path else None
        # The ledger and the usage API read the store through connections of their own; an
        # in-memory store has no second one.
        on_disk = config.db_path != ":memory:"
        self.metering = (
            BillingRunner(config.db_path, interval_s=config.meter_interval_s, card=self.card) if on_disk else None
        )
        self._usage_db = open_db(config.db_path) if on_disk else None
        # Tenants' uploaded workdirs (ArtifactService); an in-memory store keeps none.
        self.artifacts = LocalArtifactStore(root_beside(config.db_path)) if on_disk else None
        self._workdirs = WorkdirStore(open_db(config.db_path)) if on_disk else None  # what jobs still need
        self.registry = CollectorRegistry()
        Gauge(
            "neocloud_scheduler_unsandboxed_tenants_allowed",
            "1: tenant work may run on nodes that cannot sandbox its ranks (--allow-unsandboxed-tenants)",
            registry=self.registry,
        ).set(int(config.allow_unsandboxed_tenants))
        if config.allow_unsandboxed_tenants:
            logger.warning(
                "--allow-unsandboxed-tenants: TENANT JOBS MAY RUN UNSANDBOXED, as the runner's user, seeing "
                "this host's files and other jobs; for a laptop demo only, never for a site with tenants"
            )
        self.registry.register(SchedulerCollector(self.telemetry, self.controller, config.metrics_tenant_labels))
        if self.metering is not None:
            self.registry.register(MeteringCollector(self.metering, self.telemetry.fleet, config.metrics_tenant_labels))
        if self.artifacts is not None:
            self.registry.register(WorkdirCollector(self.artifacts))
        self.port = 0
        self.api_port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._api_server: grpc.aio.Server | None = None
        self._http: MetricsServer | None = None
        self._commits: asyncio.Task[None] | None = None
        self._revocation_watch: asyncio.Task[None] | None = None
        self._control: asyncio.Task[None] | None = None
        self._workdir_sweeps: asyncio.Task[None] | None = None
        self._health = HealthServicer()
        self._api_health = HealthServicer()  # the API port's: it serves no telemetry
        self._auth = Authenticator(self.jobs)

    def _grpc_server(self, health: HealthServicer) -> grpc.aio.Server:
        """A server with the API services and health (each port has its own per-peer call limit)."""
        server = grpc.aio.server(
            options=SERVER_OPTIONS,
            interceptors=[ErrorInterceptor(max_calls_per_peer=MAX_CALLS_PER_PEER)],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        add_api_services(
            server,
            self.jobs,
            ExecutorLogs(self.executor) if self.executor else NoLogs(),
            usage_db=self._usage_db,
            card=self.card,
            telemetry=self.telemetry,  # a GPU move changes the live fleet with the store
            artifacts=self.artifacts,
            auth=self._auth,  # both ports: one token cache and one refused-token budget per peer
        )
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        return server

    async def _start_api_port(self, listen: str) -> int:
        """The port for people: the API and health over server TLS, with reflection so that
        grpcurl and the like work. Telemetry is not served there (UNIMPLEMENTED)."""
        config = self.config
        server = self._grpc_server(self._api_health)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        if config.insecure:
            port = server.add_insecure_port(listen)
        else:
            assert config.api_cert_file and config.api_key_file
            creds = tls.api_server_credentials(config.api_cert_file, config.api_key_file)
            port = server.add_secure_port(listen, creds)
        if not port:
            raise OSError(f"cannot listen on {listen}")
        await server.start()
        self._api_server = server
        for name in ("", *SERVICE_NAMES):
            await self._api_health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return port

    async def start(self) -> None:
        config = self.config
        server = self._grpc_server(self._health)
        # Not the generated add_TelemetryServicer_to_server: its deserializer raises on bad bytes.
        add_telemetry_to_server(self.telemetry, server)
        if config.insecure:
            self.port = server.add_insecure_port(config.listen)
        else:
            assert config.ca_file and config.cert_file and config.key_file
            # gRPC Python cannot ask for a client certificate without requiring one, so
            # API clients present one too (any the CA signed); their role is the token's.
            creds = tls.server_credentials(config.cert_file, config.key_file, config.ca_file)
            self.port = server.add_secure_port(config.listen, creds)
        if not self.port:
            raise OSError(f"cannot listen on {config.listen}")
        await server.start()
        self._server = server
        if config.api_listen is not None:
            self.api_port = await self._start_api_port(config.api_listen)
        for name in ("", "neocloud.v1.Telemetry", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._commits = asyncio.create_task(self.telemetry.run_commits())
        if self.revocations is not None:
            self._revocation_watch = asyncio.create_task(self._watch_revocations(self.revocations))
        if self.controller is not None:
            self._control = asyncio.create_task(self.controller.run())
        if self.metering is not None:
            self.metering.start()
        if self.artifacts is not None:
            self._workdir_sweeps = asyncio.create_task(self._sweep_workdirs_forever())
        if config.metrics_port is not None:
            self._http = MetricsServer(
                self.registry,
                config.metrics_host,
                config.metrics_port,
                config.metrics_cert_file,
                config.metrics_key_file,
                config.metrics_token_file,
            )
            self.metrics_port = self._http.port
        logger.info(
            "scheduler listening on port %d (%s), API port %s, store %s, %d known nodes, metrics on port %s",
            self.port,
            "plain text" if config.insecure else "mTLS",
            self.api_port,
            config.db_path,
            len(self.telemetry.fleet.nodes),
            self.metrics_port,
        )

    async def _watch_revocations(self, revocations: revocation.RevocationList) -> None:
        """End a node's open stream within REVOCATION_POLL_S of its certificate's revocation."""
        while True:
            await asyncio.sleep(REVOCATION_POLL_S)
            await asyncio.to_thread(revocations.refresh)
            # Every tick, not only on a change: a stream opening may have seen the change first.
            self.telemetry.end_revoked()

    async def _sweep_workdirs_forever(self) -> None:
        """A sweep now and every WORKDIR_SWEEP_S; one that fails is logged, and the next tries again."""
        while True:
            try:
                await asyncio.to_thread(self.sweep_workdirs)
            except Exception:
                logger.exception("workdir sweep failed (nothing is lost); the next in %.0f s", WORKDIR_SWEEP_S)
            await asyncio.sleep(WORKDIR_SWEEP_S)

    def sweep_workdirs(self) -> Released | None:
        """Release the workdirs unused past workdir_retention_s (None: a store in memory keeps none)."""
        if self.artifacts is None or self._workdirs is None:
            return None
        retention_s = float(self.jobs.get_settings()["workdir_retention_s"])
        # Jobs read first: one submitted after this has just marked its workdir used.
        released = self.artifacts.release_unused(self._workdirs.in_use(), time.time(), retention_s)
        logger.info(
            "workdir sweep: %d archives unused for %.0f s released, %d blobs deleted, %d stale uploads removed",
            released.archives,
            retention_s,
            released.blobs,
            released.stale_uploads,
        )
        return released

    async def stop(self, grace_s: float = 2.0) -> None:
        await self._health.enter_graceful_shutdown()
        await self._api_health.enter_graceful_shutdown()
        for server in (self._server, self._api_server):
            if server is not None:
                await server.stop(grace_s)
        for task in (self._commits, self._control, self._revocation_watch, self._workdir_sweeps):
            if task is not None:
                task.cancel()
        if self.controller is not None:
            self.controller.close()
        await self.telemetry.commit()
        self.telemetry.close()
        if self.metering is not None:
            self.metering.close()
        if self._usage_db is not None:
            self._usage_db.close()
        if self._workdirs is not None:
            self._workdirs.close()
        self.jobs.close()
        if self._http is not None:
            self._http.close()
        self.db.close()


class BackgroundScheduler:
    """Runs a Scheduler on its own event loop thread (demo, benchmarks, tests)."""

    def __init__(self, config: SchedulerConfig, executor: Executor | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="neocloud-scheduler", daemon=True)
        self._thread.start()
        self.scheduler = self.call(self._create(config, executor))

    @staticmethod
    async def _create(config: SchedulerConfig, executor: Executor | None) -> Scheduler:
        scheduler = Scheduler(config, executor)
        await scheduler.start()
        return scheduler

    def call(self, coro):  # type: ignore[no-untyped-def]
        """Run a coroutine on the scheduler's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    @property
    def port(self) -> int:
        return self.scheduler.port

    def stop(self, grace_s: float = 1.0) -> None:
        if self._loop.is_closed():
            return
        self.call(self.scheduler.stop(grace_s))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
