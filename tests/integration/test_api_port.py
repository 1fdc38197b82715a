"""The scheduler's API port for people (issue 12 item 7), over real TLS on loopback: a
client with only a CA file and a token works there (no client certificate); telemetry
is not served there; reflection lists the services; the mTLS port keeps working for
nodes and for API clients with a certificate (`admin set` included); `neocloud nodes`
shows an operator every job and a tenant only its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from neocloud.agent.main import Agent
from neocloud.cli import main
from neocloud.client import Client
from neocloud.scheduler.server import BackgroundScheduler, Scheduler, SchedulerConfig
from neocloud.scheduler.store.records import Role
from neocloud.v1 import jobs_pb2, nodes_pb2, telemetry_pb2, telemetry_pb2_grpc
from neocloud.wire import tls
from tests.helpers import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Site:
    sched: BackgroundScheduler
    pki: Path  # the lab's private CA: scheduler.pem for the mTLS port, node certificates
    public_ca: Path  # the CA the API port's certificate comes from (a public one in real life)
    tokens: dict[str, str]

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.sched.scheduler.api_port}"

    @property
    def mtls(self) -> str:
        return f"127.0.0.1:{self.sched.port}"


@pytest.fixture
def site(scheduler_factory: Callable[..., BackgroundScheduler], tmp_path: Path) -> Site:
    pki, public = tmp_path / "pki", tmp_path / "public"
    tls.write_ca(pki)
    tls.write_server(pki, ["127.0.0.1", "localhost"])
    tls.write_node(pki, "node-1")
    tls.write_node(pki, "laptop")
    tls.write_ca(public)
    api_cert, api_key = tls.write_server(public, ["127.0.0.1"])
    sched = scheduler_factory(
        insecure=False,
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / "scheduler.pem"),
        key_file=str(pki / "scheduler-key.pem"),
        api_listen="127.0.0.1:0",
        api_cert_file=str(api_cert),
        api_key_file=str(api_key),
    )
    store = sched.scheduler.jobs
    store.create_tenant("acme")
    store.create_tenant("globex")
    tokens = {
        "operator": store.create_token(Role.OPERATOR, "ops"),
        "acme": store.create_token(Role.TENANT, "acme-ci", tenant="acme"),
        "globex": store.create_token(Role.TENANT, "globex-ci", tenant="globex"),
    }
    return Site(sched, pki, public / "ca.pem", tokens)


def test_a_client_with_only_a_ca_file_and_a_token_works_on_the_api_port(site: Site) -> None:
    with Client(server=site.api, token=site.tokens["acme"], ca=site.public_ca) as client:
        spec = jobs_pb2.JobSpec(job_class=jobs_pb2.JOB_CLASS_SPOT, gpus=1, command=["true"])
        job = client.jobs.Submit(jobs_pb2.SubmitJobRequest(spec=spec), metadata=client.metadata, timeout=10)
        listed = client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=10).jobs
        assert [j.job_id for j in listed] == [job.job_id]
        with pytest.raises(grpc.RpcError) as refused:  # the token still decides
            client.admin.GetSettings(jobs_pb2.GetJobRequest(), metadata=client.metadata, timeout=10)  # type: ignore[arg-type]
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The same client on the mTLS port is refused at the handshake: that port wants a certificate.
    with Client(server=site.mtls, token=site.tokens["acme"], ca=site.pki / "ca.pem") as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.jobs.List(jobs_pb2.ListJobsRequest(), metadata=client.metadata, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_telemetry_is_not_served_on_the_api_port(site: Site) -> None:
    creds = grpc.ssl_channel_credentials(site.public_ca.read_bytes())
    with grpc.secure_channel(site.api, creds) as channel:
        stream = telemetry_pb2_grpc.TelemetryStub(channel).Connect(iter([telemetry_pb2.AgentMessage()]), timeout=5)
        with pytest.raises(grpc.RpcError) as refused:
            list(stream)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Its health service says so too; the API services are SERVING.
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest
        assert health.Check(check(service="neocloud.v1.NodeService"), timeout=5).status == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(check(service="neocloud.v1.Telemetry"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_api_port_needs_its_certificate_and_key(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    mtls = {"ca_file": "ca.pem", "cert_file": "scheduler.pem", "key_file": "scheduler-key.pem"}
    with pytest.raises(ValueError, match="--api-listen needs --api-cert and --api-key"):
        Scheduler(SchedulerConfig(db_path=db, **mtls, api_listen="0.0.0.0:7444", api_cert_file="api.pem"))
    with pytest.raises(ValueError, match=r"--insecure only listens on loopback, not '0\.0\.0\.0'"):
        Scheduler(SchedulerConfig(listen="127.0.0.1:0", db_path=db, insecure=True, api_listen="0.0.0.0:7444"))
    assert not (tmp_path / "s.db").exists()  # refused before anything was opened


def test_reflection_lists_the_services(site: Site) -> None:
    creds = grpc.ssl_channel_credentials(site.public_ca.read_bytes())
    with grpc.secure_channel(site.api, creds) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        # As `grpcurl describe` does: the service's descriptor, from the server alone.
        nodes = descriptor_pool.DescriptorPool(db).FindServiceByName("neocloud.v1.NodeService")
    assert {
        "neocloud.v1.JobService",
        "neocloud.v1.AdminService",
        "neocloud.v1.UsageService",
        "neocloud.v1.NodeService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    assert "neocloud.v1.Telemetry" not in services
    assert [m.name for m in nodes.methods] == ["ListNodes"] and nodes.file.name == "neocloud/v1/nodes.proto"


def run_cli(capsys: pytest.CaptureFixture[str], *words: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(words))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_admin_set_works_over_mtls(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    laptop = ["--ca", str(site.pki / "ca.pem"), "--cert", str(site.pki / "node-laptop.pem")]
    conn = ["--server", site.mtls, *laptop, "--key", str(site.pki / "node-laptop-key.pem")]
    code, out, err = run_cli(capsys, "admin", "set", "max_requeues", "7", *conn, "--token", site.tokens["operator"])
    assert (code, err) == (0, "") and "max_requeues" in out
    assert site.sched.scheduler.jobs.get_settings()["max_requeues"] == 7


def test_nodes_shows_an_operator_every_job_and_a_tenant_its_own(
    site: Site, agent_factory: Callable[..., Agent], capsys: pytest.CaptureFixture[str]
) -> None:
    agent_factory(
        site.sched.port,
        insecure=False,
        ca_file=str(site.pki / "ca.pem"),
        cert_file=str(site.pki / "node-node-1.pem"),
        key_file=str(site.pki / "node-node-1-key.pem"),
    )
    fleet = site.sched.scheduler.telemetry.fleet
    wait_until(lambda: "node-1" in fleet.nodes and fleet.nodes["node-1"].connected, what="node-1 registered")
    gpus = sorted(fleet.nodes["node-1"].gpus.values(), key=lambda g: g.index)
    store = site.sched.scheduler.jobs
    jobs = {}
    for tenant, gpu, job_class in (("acme", gpus[0], "spot"), ("globex", gpus[1], "on_demand")):
        with Client(server=site.api, token=site.tokens[tenant], ca=site.public_ca) as client:
            spec = jobs_pb2.JobSpec(
                job_class=jobs_pb2.JobClass.Value(f"JOB_CLASS_{job_class.upper()}"), gpus=1, command=["true"]
            )
            job = client.jobs.Submit(jobs_pb2.SubmitJobRequest(spec=spec), metadata=client.metadata, timeout=10)
        store.start(job.job_id, [("node-1", [gpu.uuid])])
        jobs[tenant] = job.job_id
    store.cordon("node-1", "disk replacement", 0.0)

    def listed(token: str) -> nodes_pb2.Node:
        with Client(server=site.api, token=token, ca=site.public_ca) as client:
            (node,) = client.nodes.ListNodes(nodes_pb2.ListNodesRequest(), metadata=client.metadata, timeout=10).nodes
        return node

    operator, tenant = listed(site.tokens["operator"]), listed(site.tokens["acme"])
    for node in (operator, tenant):
        assert (node.node_id, node.gpus, node.gpus_allocated, node.gpus_idle) == ("node-1", len(gpus), 2, len(gpus) - 2)
        assert {(c.job_class, c.gpus) for c in node.allocated_by_class} == {
            (jobs_pb2.JOB_CLASS_SPOT, 1),
            (jobs_pb2.JOB_CLASS_ON_DEMAND, 1),
        }
        assert node.cordoned and node.cordon_reason == "disk replacement" and node.connected
        assert node.gpu_model and node.power_limit_w > 0
    assert sorted(j.job_id for j in operator.jobs) == sorted(jobs.values())
    assert [(j.job_id, j.tenant) for j in tenant.jobs] == [(jobs["acme"], "acme")]  # globex's job stays hidden

    conn = ["--server", site.api, "--ca", str(site.public_ca), "--token", site.tokens["acme"]]
    code, out, err = run_cli(capsys, "nodes", *conn)
    assert (code, err) == (0, "")
    header, row = out.splitlines()
    assert header.split()[:3] == ["NODE", "MODEL", "GPUS"]
    assert row.startswith("node-1") and "on_demand:1" in row and "spot:1" in row and "disk replacement" in row
    assert jobs["acme"] in row and jobs["globex"] not in row
    code, out, _ = run_cli(capsys, "nodes", "--json", *conn)
    [listed_node] = json.loads(out)
    assert code == 0 and {c["job_class"] for c in listed_node["allocated_by_class"]} == {"spot", "on_demand"}
    assert listed_node["last_seen_at"].endswith("Z") and listed_node["jobs"][0]["job_class"] == "spot"
