"""A JobService + AdminService server on loopback for tests: the real services,
the real interceptor and a real SQLite store, on an event loop of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc

from neocloud.scheduler.api.errors import ErrorInterceptor
from neocloud.scheduler.api.logs import MemoryLogSource
from neocloud.scheduler.api.services import add_api_services
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Role
from neocloud.v1 import admin_pb2_grpc, jobs_pb2_grpc

T = TypeVar("T")


class ApiServer:
    """Tenants "acme" and "globex", and one token per kind of caller in `tokens`."""

    def __init__(self, db_path: Path) -> None:
        self.store = JobStore(open_db(db_path))
        self.logs = MemoryLogSource(max_read=1000)
        self.store.create_tenant("acme")
        self.store.create_tenant("globex")
        self.tokens = {
            "operator": self.store.create_token(Role.OPERATOR, "ops"),
            "internal": self.store.create_token(Role.INTERNAL, "research"),
            "acme": self.store.create_token(Role.TENANT, "acme-ci", tenant="acme"),
            "globex": self.store.create_token(Role.TENANT, "globex-ci", tenant="globex"),
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-server", daemon=True)
        self._thread.start()
        self._server: grpc.aio.Server = self._call(self._start())
        self.address = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        add_api_services(server, self.store, self.logs, poll_interval_s=0.02)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    def auth(self, who: str) -> list[tuple[str, str]]:
        """Call metadata for one of `tokens`."""
        return [("authorization", f"Bearer {self.tokens[who]}")]

    def stop(self) -> None:
        self.channel.close()
        self._call(self._server.stop(0.5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self.store._db.close()
