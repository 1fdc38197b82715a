"""A whole site on one SQLite store, driven step by step on a simulated clock: the API on a
loopback socket with real tokens, the real controller and policy on the in-memory executor
(tests/unit/control/test_controller.py's Rig: two 8-GPU simulated H200 nodes), the agents'
batches through ingest, the ledger and billing pass with its metrics. For scripted scenarios
(tests/integration/test_week_in_the_life.py) that must run in seconds, without Ray."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Coroutine
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from neocloud.cli import main
from neocloud.scheduler.api.errors import ErrorInterceptor
from neocloud.scheduler.api.logs import MemoryLogSource
from neocloud.scheduler.api.services import add_api_services
from neocloud.scheduler.billing_runner import BillingRunner
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.metrics import MeteringCollector
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Role
from neocloud.scheduler.store.shortfalls import ShortfallStore
from neocloud.v1 import admin_pb2 as apb
from neocloud.v1 import admin_pb2_grpc, jobs_pb2_grpc, usage_pb2, usage_pb2_grpc
from neocloud.v1 import jobs_pb2 as jpb
from tests.unit.control.test_controller import Rig

T = TypeVar("T")
HOUR = 3600
DAY = 86_400
H200 = "NVIDIA H200"
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # (metric, sorted labels) -> value


class Site:
    """One store on disk shared by the API (on loopback, clocked by the simulation), the
    controller on the in-memory executor (Rig), ingest and the billing pass."""

    def __init__(self, tmp_path: Path, tenants: tuple[str, ...], period: str, teams: tuple[str, ...] = ()) -> None:
        """`tenants` are customers, `teams` the lab's own (class internal, invoiced apart); each has
        a tenant token under its name, and "ops" is an operator's."""
        self.period = period  # the month the invoices and exports are read for
        self.rig = Rig(tmp_path, tenants=())  # the clock, two 8-GPU sim nodes, the controller
        self.clock = self.rig.clock
        self.db_path = tmp_path / "s.db"
        self.store = JobStore(open_db(self.db_path), clock=self.clock)
        for tenant in tenants:
            self.store.create_tenant(tenant)
        for team in teams:
            self.store.create_tenant(team, internal=True)
        self.tokens = {t: self.store.create_token(Role.TENANT, f"{t}-ci", tenant=t) for t in (*tenants, *teams)}
        self.tokens["ops"] = self.store.create_token(Role.OPERATOR, "ops")
        self.rig.controller.shortfalls = ShortfallStore(open_db(self.db_path))  # reserved GPUs not delivered
        self.ingest = TelemetryService(self.rig.fleet, open_db(self.db_path), False)
        self.runner = BillingRunner(self.db_path, clock=self.clock)  # the card in force: the last applied
        self.metrics = CollectorRegistry()
        self.metrics.register(MeteringCollector(self.runner, self.rig.fleet))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-server", daemon=True)
        self._thread.start()
        self._server = self._call(self._start())
        self._call(self.ingest.commit())  # the agents' hellos: the store knows the fleet's GPUs
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)
        self.scrapes: list[Scrape] = []

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        add_api_services(
            server,
            self.store,
            MemoryLogSource(),
            poll_interval_s=0.02,
            clock=self.clock,
            usage_db=open_db(self.db_path),
            telemetry=self.ingest,  # a Submit is checked against its fleet
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tokens[who]}")]

    # --- the simulation ---------------------------------------------------------------

    def advance(self, seconds: float, step: float = HOUR) -> None:
        """Let time pass: each step the agents report (energy included), the controller makes
        one pass and ingest commits what it attributed, as the scheduler's loops do."""
        left = seconds
        while left > 0:
            dt = min(step, left)
            self.rig.step(dt)
            self._call(self.ingest.commit())
            left -= dt

    def settle(self, job_id: str, state: int, steps: int = 6) -> None:
        """Controller passes a few seconds apart until the job is in `state`."""
        for _ in range(steps):
            self.advance(1)
            if self.get(job_id).state == state:
                return
        raise AssertionError(f"job {job_id} is {jpb.JobState.Name(self.get(job_id).state)} after {steps} steps")

    def bill(self) -> None:
        """A billing pass (meter, rate, summarise), then a scrape of what it exports."""
        self.runner.run_once()
        text = generate_latest(self.metrics).decode()
        self.scrapes.append(
            {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        )

    # --- the API, as the tenants and the operator use it -------------------------------

    def submit(self, who: str, job_class: jpb.JobClass, gpus: int, **fields: Any) -> jpb.Job:
        spec = jpb.JobSpec(job_class=job_class, gpus=gpus, gpu_model=H200, command=["train.py"], **fields)
        job: jpb.Job = self.jobs.Submit(jpb.SubmitJobRequest(spec=spec), metadata=self.auth(who), timeout=10)
        return job

    def get(self, job_id: str) -> jpb.Job:
        job: jpb.Job = self.jobs.Get(jpb.GetJobRequest(job_id=job_id), metadata=self.auth("ops"), timeout=10)
        return job

    def exit(self, job_id: str, code: int = 0) -> None:
        self.rig.executor.exit(job_id, code)

    def apply(self, text: str) -> apb.ApplyRateCardResponse:
        request = apb.ApplyRateCardRequest(yaml=text, source="ratecard.yaml")
        reply: apb.ApplyRateCardResponse = self.admin.ApplyRateCard(request, metadata=self.auth("ops"), timeout=10)
        return reply

    def cli(self, who: str, *words: str) -> str:
        """`neocloud WORDS...` as `who` runs it against this site: its standard output."""
        out, err = io.StringIO(), io.StringIO()
        connection = ["--server", f"127.0.0.1:{self.port}", "--insecure", "--token", self.tokens[who]]
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
            main([*words, *connection])
        assert done.value.code in (0, None), (words, err.getvalue())
        return out.getvalue()

    def invoice(self, tenant: str, who: str = "ops") -> dict[str, Any]:
        """The month's invoice as the operator (naming the tenant) or the tenant itself reads it."""
        request = usage_pb2.GetInvoiceRequest(tenant=tenant if who == "ops" else "", period=self.period)
        reply = self.usage.GetInvoice(request, metadata=self.auth(who), timeout=10)
        body: dict[str, Any] = json.loads(reply.invoice_json)
        return body

    def export(self, who: str) -> tuple[list[dict[str, Any]], str]:
        """The caller's own usage rows for the month and the rate version in force, as exported."""
        request = usage_pb2.ExportUsageRequest(period=self.period)
        pages = list(self.usage.ExportUsage(request, metadata=self.auth(who), timeout=10))
        fields = ("job_id", "allocation_id", "job_class", "gpu_model", "contract_id", "gpu_ms", "energy_mj")
        rows = [{f: getattr(r, f) for f in fields} for page in pages for r in page.records]
        return rows, pages[0].rate_version

    def stop(self) -> None:
        self.channel.close()
        self._call(self._server.stop(0.5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self.runner.close()
        self.ingest.close()
        self.store.close()
