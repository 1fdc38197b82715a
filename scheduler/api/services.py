"""Puts the tenant- and operator-facing services on a gRPC server."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

import grpc

from neocloud.scheduler.api.admin import AdminService
from neocloud.scheduler.api.artifacts import ArtifactService
from neocloud.scheduler.api.auth import Authenticator
from neocloud.scheduler.api.jobs import JobService
from neocloud.scheduler.api.logs import LogSource
from neocloud.scheduler.api.nodes import NodeService
from neocloud.scheduler.api.usage import UsageService
from neocloud.scheduler.artifacts import ArtifactStore
from neocloud.scheduler.billing.ratecard import RateCard
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.store.jobs import JobStore
from neocloud.v1 import admin_pb2_grpc, artifacts_pb2_grpc, jobs_pb2_grpc, nodes_pb2_grpc, usage_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    "neocloud.v1.JobService",
    "neocloud.v1.AdminService",
    "neocloud.v1.UsageService",
    "neocloud.v1.NodeService",
    "neocloud.v1.ArtifactService",
)


def add_api_services(
    server: grpc.aio.Server,
    store: JobStore,
    logs: LogSource,
    poll_interval_s: float = 0.5,
    clock: Callable[[], float] = time.time,
    usage_db: sqlite3.Connection | None = None,
    card: RateCard | None = None,
    telemetry: TelemetryService | None = None,
    artifacts: ArtifactStore | None = None,
    auth: Authenticator | None = None,
) -> None:
    """Add JobService, AdminService, (given a connection to read the ledger with)
    UsageService, (given the running ingest, whose fleet it shows) NodeService and (given
    where workdirs are kept) ArtifactService to
    `server`. The server must be made with `grpc.aio.server(interceptors=[ErrorInterceptor()])`
    (scheduler/api/errors.py) so that domain errors reach clients as status codes."""
    # One Authenticator for every service (and, given `auth`, every port): the token caches and each
    # peer's budget of refused tokens are the site's, not one per service.
    auth = auth or Authenticator(store)
    fleet = telemetry.fleet if telemetry is not None else None  # what a Submit is checked against
    jobs = JobService(store, logs, poll_interval_s, clock, fleet, artifacts, auth)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(store, clock, telemetry, card, auth), server)
    if usage_db is not None:
        usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageService(store, usage_db, card, auth), server)
    if telemetry is not None:
        nodes_pb2_grpc.add_NodeServiceServicer_to_server(NodeService(store, telemetry.fleet, auth), server)
    if artifacts is not None:
        artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(ArtifactService(store, artifacts, auth), server)
    logger.debug("added %s", ", ".join(SERVICE_NAMES))
