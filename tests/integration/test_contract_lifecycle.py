"""Contracts and rate cards with a lifecycle (issue 12, items 2 and 4), over real gRPC
on loopback with a real SQLite store: contracts are ended, never deleted, and stay
billable; a contract is priced when it is created (the operator adds the rate
first, under a contract id it chooses); the rate card is versioned and switched
without a restart, with a dry run; impossible contracts, cordons and invoices are
refused at the door with the limit named."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from neocloud.cli.main import build_parser
from neocloud.scheduler.api.errors import ErrorInterceptor
from neocloud.scheduler.api.logs import MemoryLogSource
from neocloud.scheduler.api.services import add_api_services
from neocloud.scheduler.billing import Books, load_ratecard
from neocloud.scheduler.billing.live import card_of
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Role
from neocloud.v1 import admin_pb2 as pb
from neocloud.v1 import admin_pb2_grpc, usage_pb2, usage_pb2_grpc

T = TypeVar("T")
NOV_START = 1793491200.0  # 2026-11-01T00:00:00Z
NOW = NOV_START + 10 * 86400  # 2026-11-11: November is the open month
DEC_START = 1796083200.0
H200 = "NVIDIA H200"
GPUS_PER_NODE = 8
CARD = """\
currency: USD
prices:
  internal: {"*": "1.65"}
  on_demand: {"NVIDIA H200": "3.50"}
  spot: {"NVIDIA H200": "1.40"}
contracts:
  acme-h200:
    commitment_per_month: "3000.00"
    overage_per_gpu_hour: "3.00"
    sla_credit_per_gpu_hour: "5.00"
"""


class Site:
    """The job, admin and usage services on loopback over one store, a fleet of two 8-GPU
    H200 nodes (as agents registered them), tenants acme and globex, a settable clock."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.store = JobStore(open_db(db_path))
        self.now = NOW
        for node in ("gpu-1", "gpu-2"):
            self.store._db.execute(
                "INSERT INTO nodes (node_id, agent_version, backend, stream_epoch, last_seq, first_seen_us,"
                " last_seen_us) VALUES (?, '1', 'sim', 1, 0, 0, 0)",
                (node,),
            )
            for i in range(GPUS_PER_NODE):
                self.store._db.execute(
                    "INSERT INTO gpus (uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw)"
                    " VALUES (?, ?, ?, ?, 1, 700000)",
                    (f"GPU-{node}-{i}", node, i, H200),
                )
        self.store.create_tenant("acme")
        self.store.create_tenant("globex")
        self.op = [("authorization", f"Bearer {self.store.create_token(Role.OPERATOR, 'ops')}")]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-server", daemon=True)
        self._thread.start()
        self._server = self._call(self._start())
        self.address = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.usage = usage_pb2_grpc.UsageServiceStub(self.channel)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        add_api_services(
            server, self.store, MemoryLogSource(), clock=lambda: self.now, usage_db=open_db(self.db_path), card=None
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    def apply(self, text: str, dry_run: bool = False) -> pb.ApplyRateCardResponse:
        request = pb.ApplyRateCardRequest(yaml=text, source="card.yaml", dry_run=dry_run)
        reply: pb.ApplyRateCardResponse = self.admin.ApplyRateCard(request, metadata=self.op, timeout=10)
        return reply

    def contract(self, cid: str = "acme-h200", tenant: str = "acme", **fields: Any) -> pb.Contract:
        values: dict[str, Any] = {"gpus": 8, "gpu_model": H200, "start": NOV_START, "end": DEC_START + 86400 * 365}
        values.update(fields)
        request = pb.CreateContractRequest(contract_id=cid, tenant=tenant, **values)
        contract: pb.Contract = self.admin.CreateContract(request, metadata=self.op, timeout=10)
        return contract

    def invoice(self, tenant: str, period: str = "2026-11") -> dict[str, Any]:
        request = usage_pb2.GetInvoiceRequest(tenant=tenant, period=period)
        body: dict[str, Any] = json.loads(self.usage.GetInvoice(request, metadata=self.op, timeout=10).invoice_json)
        return body

    def use(self, tenant: str, job_class: str, gpu_hours: int, contract_id: str | None = None) -> None:
        """Metered usage: `gpu_hours` H200 GPU-hours in the first hour of November, one allocation."""
        self.store._db.execute(
            "INSERT INTO usage (usage_id, tenant, job_id, allocation_id, gpu_model, job_class, contract_id, hour,"
            " gpu_ms, energy_mj, util_gpu_ms, peak_power_mw, memory_peak_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, 0, 0, 0, 0)",
            (f"u-{tenant}-{job_class}", tenant, f"j-{tenant}", f"a-{tenant}-{job_class}", H200, job_class,
             contract_id, int(NOV_START), gpu_hours * 3_600_000),
        )  # fmt: skip

    def stop(self) -> None:
        self.channel.close()
        self._call(self._server.stop(0.5))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self.store.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "scheduler.db")
    yield s
    s.stop()


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert isinstance(caught.value, grpc.RpcError)
    return caught.value


def total(invoice: dict[str, Any]) -> Decimal:
    return Decimal(str(invoice["total"]))


def test_an_ended_contract_stays_billable_and_delete_refuses(site: Site) -> None:
    """On main, DeleteContract removed the contract and its tenant's invoice (and the fleet
    report and metrics, which rate every tenant) failed for good on its usage rows."""
    site.apply(CARD)
    site.contract()
    site.use("acme", "reserved", 10, "acme-h200")
    site.use("globex", "on_demand", 2)
    before = total(site.invoice("acme"))
    assert before > 0

    e = refused(lambda: site.admin.DeleteContract(pb.DeleteContractRequest(contract_id="acme-h200"), metadata=site.op))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "neocloud admin contract end acme-h200" in (e.details() or "")

    ended = site.admin.EndContract(pb.EndContractRequest(contract_id="acme-h200"), metadata=site.op)
    assert ended.end == NOW
    after = site.invoice("acme")
    commitment = [ln for ln in after["lines"] if ln["kind"] == "commitment"]
    # Take-or-pay for the ten days it ran, not the month: 3000 x 10/30.
    assert [Decimal(str(ln["amount"])) for ln in commitment] == [Decimal("1000.00")]
    assert total(after) < before
    # What the fleet report and the per-tenant metrics do: rate every tenant of the month.
    books = Books(open_db(site.db_path), card_of(site.store.ratecard_versions()[-1]))
    assert [books.rate(t, "2026-11").tenant for t in books.tenants(NOV_START, DEC_START)] == ["acme", "globex"]

    past = refused(
        lambda: site.admin.EndContract(pb.EndContractRequest(contract_id="acme-h200", at=NOW - 60), metadata=site.op)
    )
    assert past.code() == grpc.StatusCode.FAILED_PRECONDITION and "in the past" in (past.details() or "")
    gone = refused(lambda: site.admin.EndContract(pb.EndContractRequest(contract_id="nope"), metadata=site.op))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    trail = site.admin.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=site.op).events
    assert [(e.action, e.subject, e.actor) for e in trail] == [
        ("apply-ratecard", "ratecard", "ops"),
        ("create-contract", "acme-h200", "ops"),
        ("end-contract", "acme-h200", "ops"),
    ]
    assert json.loads(trail[-1].detail_json) == {"end": NOW, "end_was": DEC_START + 86400 * 365}


def test_a_contract_not_started_yet_may_be_deleted(site: Site) -> None:
    site.apply(CARD)
    site.contract(start=DEC_START, end=DEC_START + 86400)
    site.admin.DeleteContract(pb.DeleteContractRequest(contract_id="acme-h200"), metadata=site.op)
    assert site.store.list_contracts() == []


def test_a_contract_is_priced_when_created_and_the_rate_comes_first(site: Site) -> None:
    """On main the server made the id, so no rate could exist for it; the contract was
    accepted and the tenant's invoice failed later ("has no terms")."""
    e = refused(lambda: site.contract())
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "no rate card" in (e.details() or "")
    site.apply(CARD)
    e = refused(lambda: site.contract("acme-other"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "contracts.acme-other" in (e.details() or "")
    e = refused(lambda: site.contract("acme-h200", gpus=0, gpu_model="", power_w=5600.0))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "nominal_gpu_w" in (e.details() or "")
    e = refused(lambda: site.contract(""))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "contract_id is required" in (e.details() or "")
    assert site.contract().contract_id == "acme-h200"
    e = refused(lambda: site.contract())
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS
    assert total(site.invoice("acme")) > 0  # priced from the start


@pytest.mark.parametrize(
    ("fields", "code", "said"),
    [
        ({"tenant": "nobody"}, grpc.StatusCode.NOT_FOUND, "tenant 'nobody' does not exist"),
        ({"gpus": 100_000}, grpc.StatusCode.FAILED_PRECONDITION, "100000 GPUs of model NVIDIA H200: the fleet has 16"),
        ({"gpus": 17, "gpu_model": ""}, grpc.StatusCode.FAILED_PRECONDITION, "17 GPUs: the fleet has 16"),
        ({"gpu_model": "NVIDIA B300"}, grpc.StatusCode.FAILED_PRECONDITION, "no GPU of model 'NVIDIA B300'"),
    ],
)
def test_impossible_contracts_are_refused_with_the_limit(
    site: Site, fields: dict[str, Any], code: grpc.StatusCode, said: str
) -> None:
    site.apply(CARD)
    e = refused(lambda: site.contract(**fields))
    assert e.code() == code and said in (e.details() or ""), e.details()
    assert site.store.list_contracts() == []
    assert site.contract(gpus=16).gpus == 16  # the whole fleet fits


def test_cordon_and_invoice_refuse_what_does_not_exist(site: Site) -> None:
    e = refused(lambda: site.admin.CordonNode(pb.CordonNodeRequest(node_id="gpu-9", reason="XID 79"), metadata=site.op))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "no node 'gpu-9'" in (e.details() or "")
    assert site.admin.CordonNode(pb.CordonNodeRequest(node_id="gpu-1", reason="XID 79"), metadata=site.op).node_id
    e = refused(lambda: site.invoice("nobody"))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "tenant 'nobody' does not exist" in (e.details() or "")


def test_rate_card_versions_dry_run_and_switch_without_restart(site: Site) -> None:
    first = site.apply(CARD)
    assert (first.applied, first.version.sequence, first.version.applied_by) == (True, 1, "ops")
    site.use("globex", "on_demand", 10)
    assert total(site.invoice("globex")) == Decimal("35.00")

    dearer = CARD.replace('on_demand: {"NVIDIA H200": "3.50"}', 'on_demand: {"NVIDIA H200": "4.00"}')
    dry = site.apply(dearer, dry_run=True)
    assert not dry.applied and dry.period == "2026-11" and dry.version.sequence == 2
    assert [(c.tenant, c.before, c.after) for c in dry.changes] == [("globex", "35.00", "40.00")]
    assert len(site.store.ratecard_versions()) == 1 and total(site.invoice("globex")) == Decimal("35.00")

    second = site.apply(dearer)
    assert second.applied and second.version.version.startswith("r2-")
    assert total(site.invoice("globex")) == Decimal("40.00")  # no restart
    assert not site.apply(dearer).applied  # the same text is not a new version
    listed = site.admin.ListRateCards(pb.ListRateCardsRequest(), metadata=site.op).versions
    assert [v.sequence for v in listed] == [1, 2]  # old versions are kept

    site.contract()
    dropped = dearer[: dearer.index("contracts:")]
    e = refused(lambda: site.apply(dropped))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "contracts.acme-h200" in (e.details() or "")
    e = refused(lambda: site.apply(dearer.replace('"4.00"', '"-4.00"')))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "card.yaml line 4" in (e.details() or "")
    assert len(site.store.ratecard_versions()) == 2


def test_the_demo_contract_is_priced_by_the_shipped_rate_card_alone(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """On main the demo's contract id was made at run time and its terms by demo code, so
    `neocloud invoice --rate-card deploy/config/ratecard.example.yaml` refused it."""
    from neocloud.demo import scenario
    from neocloud.demo.billing import EXAMPLE_RATECARD

    demo = scenario.load(scenario.DEFAULT_FILE)
    reserved = next(t for t in demo.tenants if t.contract is not None)
    assert reserved.contract is not None and reserved.name == "globex"
    site.apply(EXAMPLE_RATECARD.read_text(encoding="utf-8"))
    c = reserved.contract
    site.contract(c.contract_id, "globex", gpus=0, gpu_model="", power_w=c.power_w or 0.0)
    site.use("globex", "reserved", 8, c.contract_id)
    shipped = Path(__file__).resolve().parents[2] / "deploy" / "config" / "ratecard.example.yaml"
    books = Books(open_db(site.db_path), load_ratecard(shipped))
    assert books.rate("globex", "2026-11").total > 0
    # What an operator runs on the scheduler host, from the shipped file alone.
    args = build_parser().parse_args(
        ["invoice", "--db", str(site.db_path), "--rate-card", str(shipped), "--tenant", "globex", "--period",
         "2026-11", "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    lines = json.loads(capsys.readouterr().out)["lines"]
    assert [ln["contract_id"] for ln in lines if ln["kind"] == "commitment"] == ["globex-demo"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[" * 50_000, "nested too deeply"),  # was RecursionError: INTERNAL and a traceback
        (CARD.replace('"3.50"', '"1e100000"'), "more than 15 digits before the point"),  # was a 100,001-digit price
        (CARD.replace('"3.50"', '"1e-40"'), "more than 24 digits after the point"),
        ("\x00", "not valid YAML"),
    ],
)
def test_a_hostile_rate_card_is_invalid_argument(site: Site, text: str, said: str) -> None:
    e = refused(lambda: site.apply(text))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and said in (e.details() or ""), e.details()
    assert site.store.ratecard_versions() == []
