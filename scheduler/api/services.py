"""Puts the tenant- and operator-facing services on a gRPC server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from neocloud.scheduler.api.admin import AdminService
from neocloud.scheduler.api.jobs import JobService
from neocloud.scheduler.api.logs import LogSource
from neocloud.scheduler.store.jobs import JobStore
from neocloud.v1 import admin_pb2_grpc, jobs_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAMES = ("neocloud.v1.JobService", "neocloud.v1.AdminService")


def add_api_services(
    server: grpc.aio.Server,
    store: JobStore,
    logs: LogSource,
    poll_interval_s: float = 0.5,
    clock: Callable[[], float] = time.time,
) -> None:
    """Add JobService and AdminService to `server`. The server must be made with
    `grpc.aio.server(interceptors=[ErrorInterceptor()])` (scheduler/api/errors.py)
    so that domain errors reach clients as status codes."""
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobService(store, logs, poll_interval_s, clock), server)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(store, clock), server)
    logger.debug("added %s", ", ".join(SERVICE_NAMES))
