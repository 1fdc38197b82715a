"""JobService and AdminService over real gRPC on loopback: authentication,
roles, tenant isolation, validation, idempotency, Watch and Logs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobState
from neocloud.v1 import admin_pb2 as admin_pb
from neocloud.v1 import jobs_pb2 as pb
from tests.api_server import ApiServer
from tests.unit.test_job_store import doom_commits

GPUS = [f"GPU-{i}" for i in range(8)]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


def spec(**fields: Any) -> pb.JobSpec:
    values: dict[str, Any] = {"job_class": pb.JOB_CLASS_SPOT, "gpus": 8, "command": ["python", "train.py"]}
    values.update(fields)
    return pb.JobSpec(**values)


def submit(api: ApiServer, who: str = "acme", request_id: str = "", **fields: Any) -> pb.Job:
    request = pb.SubmitJobRequest(spec=spec(**fields), client_request_id=request_id)
    return api.jobs.Submit(request, metadata=api.auth(who), timeout=10)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def job_rows(api: ApiServer) -> int:
    return len(api.store.list_jobs())


# --- jobs as a tenant ------------------------------------------------------------------------------


def test_submit_get_list_cancel(api: ApiServer) -> None:
    job = submit(api, env={"LR": "0.1"}, grace_s=10.0, max_runtime_s=3600.0, gpu_model="H200")
    assert job.state == pb.JOB_STATE_QUEUED and job.tenant == "acme" and job.job_id.startswith("j-")
    assert (job.spec.gpus_per_node, job.spec.grace_s, job.spec.requeue_on_preempt) == (8, 10.0, True)
    got = api.jobs.Get(pb.GetJobRequest(job_id=job.job_id), metadata=api.auth("acme"))
    assert got.spec == job.spec and not got.HasField("started_at")
    api.store.start(job.job_id, [("node-1", GPUS)])
    got = api.jobs.Get(pb.GetJobRequest(job_id=job.job_id), metadata=api.auth("acme"))
    assert got.state == pb.JOB_STATE_RUNNING and [a.node_id for a in got.allocations] == ["node-1"]
    listed = api.jobs.List(pb.ListJobsRequest(), metadata=api.auth("acme"))
    assert [j.job_id for j in listed.jobs] == [job.job_id]
    queued = api.jobs.List(pb.ListJobsRequest(states=[pb.JOB_STATE_QUEUED]), metadata=api.auth("acme"))
    assert list(queued.jobs) == []
    cancelled = api.jobs.Cancel(pb.CancelJobRequest(job_id=job.job_id), metadata=api.auth("acme"))
    assert cancelled.cancel_requested and cancelled.state == pb.JOB_STATE_RUNNING


def test_a_private_ray_request_is_kept(api: ApiServer) -> None:
    job = submit(api, ray=True)
    assert job.spec.ray and api.store.get(job.job_id).spec.ray
    assert not api.store.get(submit(api).job_id).spec.ray


def test_submit_is_idempotent(api: ApiServer) -> None:
    first = submit(api, request_id="run-42")
    assert submit(api, request_id="run-42").job_id == first.job_id
    e = rpc_error(lambda: submit(api, request_id="run-42", gpus=16))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS and "run-42" in e.details()
    assert submit(api, request_id="").job_id != submit(api, request_id="").job_id  # no id: a new job each time
    assert job_rows(api) == 3


def test_tenants_cannot_see_each_others_jobs(api: ApiServer) -> None:
    job = submit(api, "acme")
    theirs = submit(api, "globex")
    calls: list[Callable[[], object]] = [
        lambda: api.jobs.Get(pb.GetJobRequest(job_id=job.job_id), metadata=api.auth("globex")),
        lambda: api.jobs.Cancel(pb.CancelJobRequest(job_id=job.job_id), metadata=api.auth("globex")),
        lambda: list(api.jobs.Watch(pb.WatchJobRequest(job_id=job.job_id), metadata=api.auth("globex"))),
        lambda: list(api.jobs.Logs(pb.JobLogsRequest(job_id=job.job_id), metadata=api.auth("globex"))),
    ]
    missing = rpc_error(lambda: api.jobs.Get(pb.GetJobRequest(job_id="j-000000000000"), metadata=api.auth("globex")))
    for call in calls:
        e = rpc_error(call)
        assert e.code() == grpc.StatusCode.NOT_FOUND  # not PERMISSION_DENIED: ids do not leak
        assert e.details() == missing.details().replace("j-000000000000", job.job_id)
    listed = api.jobs.List(pb.ListJobsRequest(), metadata=api.auth("globex"))
    assert [j.job_id for j in listed.jobs] == [theirs.job_id]
    for request in (pb.ListJobsRequest(all_tenants=True), pb.ListJobsRequest(tenant="acme")):
        e = rpc_error(lambda r=request: api.jobs.List(r, metadata=api.auth("globex")))  # type: ignore[misc]
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert api.store.get(job.job_id).state is JobState.QUEUED  # the other tenant's cancel did nothing


# --- concurrent submits (group commit) ------------------------------------------------------------


def concurrently(calls: list[Callable[[], pb.Job]]) -> list[pb.Job | grpc.RpcError]:
    """Run the calls on threads of their own, all released at once; their results in order."""
    results: list[pb.Job | grpc.RpcError | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except grpc.RpcError as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_concurrent_submits_are_all_durable_when_acknowledged(api: ApiServer, tmp_path: Path) -> None:
    def client(c: int) -> pb.Job:
        jobs = [submit(api, request_id=f"c{c}-{n}") for n in range(10)]
        return jobs[-1]

    concurrently([lambda c=c: client(c) for c in range(8)])  # type: ignore[misc]
    other = JobStore(open_db(tmp_path / "scheduler.db"))  # what is committed, seen from another connection
    assert {j.spec.client_request_id for j in other.list_jobs(limit=1000)} == {
        f"c{c}-{n}" for c in range(8) for n in range(10)
    }
    assert other._db.execute("SELECT COUNT(*) FROM job_events WHERE kind = 'submitted'").fetchone()[0] == 80
    other.close()


def test_concurrent_submits_of_one_request_id_make_one_job(api: ApiServer) -> None:
    results = concurrently([lambda: submit(api, request_id="same") for _ in range(12)])
    assert len({r.job_id for r in results if isinstance(r, pb.Job)}) == 1 and len(results) == 12
    assert job_rows(api) == 1


def test_a_bad_submit_fails_alone_among_concurrent_ones(api: ApiServer) -> None:
    submit(api, request_id="taken")
    bad: list[Callable[[], pb.Job]] = [
        lambda: submit(api, request_id="bad-gpus", gpus=0),
        lambda: submit(api, request_id="bad-contract", job_class=pb.JOB_CLASS_RESERVED, contract_id="c-nope"),
        lambda: submit(api, request_id="taken", gpus=16),
    ]
    good: list[Callable[[], pb.Job]] = [lambda i=i: submit(api, request_id=f"good-{i}") for i in range(9)]  # type: ignore[misc]
    results = concurrently(bad + good)
    codes = [r.code() for r in results[:3] if isinstance(r, grpc.RpcError)]
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS]
    assert all(isinstance(r, pb.Job) for r in results[3:])
    assert {j.spec.client_request_id for j in api.store.list_jobs()} == {"taken"} | {f"good-{i}" for i in range(9)}


def test_a_failed_group_commit_fails_its_callers_and_writes_nothing(api: ApiServer) -> None:
    doom_commits(api.store)  # a group holding a "doomed..." request fails at COMMIT, all of it
    ids = [f"doomed-{i}" for i in range(3)] + [f"innocent-{i}" for i in range(9)]
    results = concurrently([lambda r=r: submit(api, request_id=r) for r in ids])  # type: ignore[misc]
    acked = {r.client_request_id for r in results if isinstance(r, pb.Job)}
    failed = [r for r in results if isinstance(r, grpc.RpcError)]
    assert all(e.code() == grpc.StatusCode.INTERNAL and "incident" in e.details() for e in failed)
    assert not any(r.startswith("doomed") for r in acked) and len(failed) == len(ids) - len(acked)
    assert {j.spec.client_request_id for j in api.store.list_jobs()} == acked  # the failed wrote nothing
    api.store._db.execute("DROP TRIGGER doom_commit")
    retried = concurrently([lambda r=r: submit(api, request_id=r) for r in ids])  # type: ignore[misc]
    assert all(isinstance(r, pb.Job) for r in retried)
    assert sorted(j.spec.client_request_id for j in api.store.list_jobs()) == sorted(ids)  # one job each


# --- roles -----------------------------------------------------------------------------------------


def test_roles(api: ApiServer) -> None:
    e = rpc_error(lambda: submit(api, "acme", job_class=pb.JOB_CLASS_INTERNAL))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "internal" in e.details()
    e = rpc_error(lambda: submit(api, "internal", job_class=pb.JOB_CLASS_SPOT))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    e = rpc_error(lambda: submit(api, "operator"))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert job_rows(api) == 0
    internal = submit(api, "internal", job_class=pb.JOB_CLASS_INTERNAL)
    assert internal.tenant == "internal"
    tenant_job = submit(api, "acme")
    e = rpc_error(lambda: api.jobs.Get(pb.GetJobRequest(job_id=internal.job_id), metadata=api.auth("acme")))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    e = rpc_error(lambda: api.jobs.Get(pb.GetJobRequest(job_id=tenant_job.job_id), metadata=api.auth("internal")))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    listed = api.jobs.List(pb.ListJobsRequest(), metadata=api.auth("internal"))
    assert [j.job_id for j in listed.jobs] == [internal.job_id]
    # Operators see everything, one tenant or all of them.
    assert api.jobs.Get(pb.GetJobRequest(job_id=tenant_job.job_id), metadata=api.auth("operator")).tenant == "acme"
    everything = api.jobs.List(pb.ListJobsRequest(all_tenants=True), metadata=api.auth("operator"))
    assert {j.job_id for j in everything.jobs} == {internal.job_id, tenant_job.job_id}
    acme = api.jobs.List(pb.ListJobsRequest(tenant="acme"), metadata=api.auth("operator"))
    assert [j.job_id for j in acme.jobs] == [tenant_job.job_id]
    e = rpc_error(lambda: api.jobs.List(pb.ListJobsRequest(), metadata=api.auth("operator")))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "all_tenants" in e.details()


def test_reserved_jobs_run_against_the_callers_own_contract(api: ApiServer) -> None:
    mine = api.store.create_contract("acme", start=0.0, end=4e9, gpus=64)
    theirs = api.store.create_contract("globex", start=0.0, end=4e9, gpus=64)
    e = rpc_error(lambda: submit(api, job_class=pb.JOB_CLASS_RESERVED, contract_id=theirs.contract_id))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "contract_id" in e.details()
    e = rpc_error(lambda: submit(api, job_class=pb.JOB_CLASS_RESERVED))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "contract_id" in e.details()
    job = submit(api, job_class=pb.JOB_CLASS_RESERVED, contract_id=mine.contract_id)
    assert job.spec.contract_id == mine.contract_id


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Basic dXNlcjpwYXNz")],
        [("authorization", "Bearer ")],
        [("authorization", "Bearer nct_not-a-real-token")],
    ],
)
def test_calls_without_a_valid_token_are_unauthenticated(api: ApiServer, metadata: list[tuple[str, str]]) -> None:
    for call in (
        lambda: api.jobs.Submit(pb.SubmitJobRequest(spec=spec()), metadata=metadata),
        lambda: api.jobs.List(pb.ListJobsRequest(), metadata=metadata),
        lambda: api.admin.ListTenants(admin_pb.ListTenantsRequest(), metadata=metadata),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.UNAUTHENTICATED
    assert job_rows(api) == 0


def test_a_revoked_token_stops_working(api: ApiServer) -> None:
    submit(api)
    api.admin.RevokeToken(admin_pb.RevokeTokenRequest(name="acme-ci"), metadata=api.auth("operator"))
    assert rpc_error(lambda: submit(api)).code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_revoked_while_it_watches_or_follows_ends_the_stream(api: ApiServer) -> None:
    job = submit(api)
    api.store.start(job.job_id, [("node-1", GPUS)])  # running: Watch and Logs -f would go on for as long
    watch = api.jobs.Watch(pb.WatchJobRequest(job_id=job.job_id), metadata=api.auth("acme"), timeout=20)
    logs = api.jobs.Logs(pb.JobLogsRequest(job_id=job.job_id, follow=True), metadata=api.auth("acme"), timeout=20)
    assert [next(watch).kind, next(watch).kind] == ["submitted", "started"]
    api.admin.RevokeToken(admin_pb.RevokeTokenRequest(name="acme-ci"), metadata=api.auth("operator"))
    for stream in (watch, logs):
        with pytest.raises(grpc.RpcError) as ended:
            list(stream)
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"job_class": pb.JOB_CLASS_UNSPECIFIED}, "job_class"),
        ({"job_class": 99}, "job_class"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": -8}, "gpus"),
        ({"gpus": 4097}, "gpus"),
        ({"gpus": 16, "gpus_per_node": 16}, "gpus_per_node"),
        ({"gpus": 16, "gpus_per_node": 3}, "gpus_per_node"),
        ({"grace_s": -1.0}, "grace_s"),
        ({"grace_s": 3600.5}, "grace_s"),
        ({"max_runtime_s": 0.0}, "max_runtime_s"),
        ({"max_runtime_s": float("inf")}, "max_runtime_s"),
        ({"env": {"bad-key": "1"}}, "env"),
        ({"env": {f"K{i}": "v" for i in range(65)}}, "env"),
        ({"command": []}, "command"),
        ({"command": ["x"] * 257}, "command"),
        ({"command": ["python", "a" * 4097]}, "command"),
        ({"command": [""]}, "command"),
        ({"entrypoint": "pkg.mod:main"}, "command"),
        ({"command": [], "entrypoint": "not an entrypoint"}, "entrypoint"),
        ({"gpu_model": "H" * 97}, "gpu_model"),
        ({"contract_id": "c-123"}, "contract_id"),
    ],
)
def test_every_bad_field_is_invalid_argument_and_writes_nothing(
    api: ApiServer, fields: dict[str, Any], field: str
) -> None:
    e = rpc_error(lambda: submit(api, **fields))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.details()
    assert job_rows(api) == 0


def test_other_bad_requests(api: ApiServer) -> None:
    e = rpc_error(lambda: submit(api, request_id="r" * 129))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "client_request_id" in e.details()
    for request in (pb.ListJobsRequest(limit=5000), pb.ListJobsRequest(states=[pb.JOB_STATE_UNSPECIFIED])):
        e = rpc_error(lambda r=request: api.jobs.List(r, metadata=api.auth("acme")))  # type: ignore[misc]
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    e = rpc_error(lambda: api.jobs.Get(pb.GetJobRequest(job_id=""), metadata=api.auth("acme")))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in e.details()
    assert job_rows(api) == 0


def test_an_unexpected_error_is_internal_and_logged(api: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    api.store._db.execute("CREATE TRIGGER boom BEFORE INSERT ON job_events BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with caplog.at_level(logging.ERROR):
        e = rpc_error(lambda: submit(api))
    assert e.code() == grpc.StatusCode.INTERNAL and "incident" in e.details()
    assert "boom" not in e.details()  # internals stay in the log
    incident = e.details().split("incident ")[1].split(";")[0]
    assert any(incident in r.getMessage() and r.exc_info for r in caplog.records)
    assert job_rows(api) == 0


# --- Watch and Logs --------------------------------------------------------------------------------


def test_watch_streams_events_until_the_job_ends(api: ApiServer) -> None:
    job = submit(api)
    stream = api.jobs.Watch(pb.WatchJobRequest(job_id=job.job_id), metadata=api.auth("acme"), timeout=20)
    first = next(stream)
    assert (first.kind, first.state) == ("submitted", pb.JOB_STATE_QUEUED)
    api.store.start(job.job_id, [("node-1", GPUS)])
    assert next(stream).kind == "started"
    api.store.finish(job.job_id, JobState.SUCCEEDED, 0, "done")
    rest = list(stream)
    assert [(e.kind, e.state, e.message) for e in rest] == [("succeeded", pb.JOB_STATE_SUCCEEDED, "done")]
    # Resuming after the last event of a finished job ends at once.
    again = api.jobs.Watch(pb.WatchJobRequest(job_id=job.job_id, after_event_id=rest[-1].event_id),
                           metadata=api.auth("acme"), timeout=20)  # fmt: skip
    assert list(again) == []


def test_logs_read_and_follow(api: ApiServer) -> None:
    job = submit(api)
    api.logs.append(job.job_id, b"x" * 2500)
    chunks = list(api.jobs.Logs(pb.JobLogsRequest(job_id=job.job_id), metadata=api.auth("acme"), timeout=20))
    assert b"".join(c.data for c in chunks) == b"x" * 2500 and not any(c.eof for c in chunks)
    assert [c.offset for c in chunks] == [0, 1000, 2000]
    tail = list(api.jobs.Logs(pb.JobLogsRequest(job_id=job.job_id, offset=2400), metadata=api.auth("acme")))
    assert b"".join(c.data for c in tail) == b"x" * 100

    received: list[pb.LogChunk] = []
    follow = api.jobs.Logs(
        pb.JobLogsRequest(job_id=job.job_id, offset=2500, follow=True), metadata=api.auth("acme"), timeout=20
    )
    reader = threading.Thread(target=lambda: received.extend(follow))
    reader.start()
    api.logs.append(job.job_id, b"step 1\n")
    api.logs.append(job.job_id, b"step 2\n")
    api.logs.close(job.job_id)
    reader.join(timeout=20)
    assert not reader.is_alive()
    assert b"".join(c.data for c in received) == b"step 1\nstep 2\n" and received[-1].eof
    assert received[-1].offset == 2500 + 14


def test_following_the_logs_of_a_finished_job_ends(api: ApiServer) -> None:
    job = submit(api)
    api.logs.append(job.job_id, b"partial")  # the source never says eof
    api.store.finish(job.job_id, JobState.FAILED, None, "node lost")
    chunks = list(
        api.jobs.Logs(pb.JobLogsRequest(job_id=job.job_id, follow=True), metadata=api.auth("acme"), timeout=20)
    )
    assert b"".join(c.data for c in chunks) == b"partial"


# --- admin -----------------------------------------------------------------------------------------


def test_admin_operations(api: ApiServer) -> None:
    op = api.auth("operator")
    tenant = api.admin.CreateTenant(admin_pb.CreateTenantRequest(name="initech", weight=3.0), metadata=op)
    assert (tenant.name, tenant.weight) == ("initech", 3.0)
    names = [t.name for t in api.admin.ListTenants(admin_pb.ListTenantsRequest(), metadata=op).tenants]
    assert names == ["acme", "globex", "initech"]
    e = rpc_error(lambda: api.admin.CreateTenant(admin_pb.CreateTenantRequest(name="initech"), metadata=op))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS

    created = api.admin.CreateToken(
        admin_pb.CreateTokenRequest(name="initech-ci", role=admin_pb.ROLE_TENANT, tenant="initech"), metadata=op
    )
    assert created.token.startswith("nct_") and created.info.tenant == "initech"
    api.tokens["initech"] = created.token
    assert submit(api, "initech").tenant == "initech"
    listed = api.admin.ListTokens(admin_pb.ListTokensRequest(), metadata=op).tokens
    assert "initech-ci" in [t.name for t in listed] and all(created.token not in str(t) for t in listed)
    api.admin.RevokeToken(admin_pb.RevokeTokenRequest(name="initech-ci"), metadata=op)
    assert rpc_error(lambda: submit(api, "initech")).code() == grpc.StatusCode.UNAUTHENTICATED

    # The rate first (contracts are priced when created: tests/integration/test_contract_lifecycle.py).
    card = (
        'prices: {internal: {"*": "1"}, on_demand: {"*": "3"}, spot: {"*": "1"}}\n'
        'contracts: {initech-1mw: {commitment_per_month: "9", nominal_gpu_w: 700, overage_per_gpu_hour: "3",'
        ' sla_credit_per_gpu_hour: "3"}}\n'
    )
    api.admin.ApplyRateCard(admin_pb.ApplyRateCardRequest(yaml=card), metadata=op)
    e = rpc_error(
        lambda: api.admin.CreateContract(
            admin_pb.CreateContractRequest(contract_id="initech-1mw", tenant="initech", gpus=64, start=1e9, end=2e9),
            metadata=op,
        )
    )
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "the fleet has 0" in e.details()
    contract = api.admin.CreateContract(
        admin_pb.CreateContractRequest(contract_id="initech-1mw", tenant="initech", power_w=1e6, start=1e9, end=2e9),
        metadata=op,
    )
    assert contract.contract_id == "initech-1mw"
    e = rpc_error(
        lambda: api.admin.CreateContract(
            admin_pb.CreateContractRequest(tenant="initech", gpus=64, power_w=1e6, start=1e9, end=2e9), metadata=op
        )
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "exactly one of gpus" in e.details()
    listed_contracts = api.admin.ListContracts(admin_pb.ListContractsRequest(), metadata=op).contracts
    assert [c.contract_id for c in listed_contracts] == [contract.contract_id]
    e = rpc_error(
        lambda: api.admin.DeleteContract(admin_pb.DeleteContractRequest(contract_id=contract.contract_id), metadata=op)
    )
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION  # started: it is ended, not deleted
    ended = api.admin.EndContract(admin_pb.EndContractRequest(contract_id=contract.contract_id), metadata=op)
    assert ended.end < 2e9
    assert [c.end for c in api.admin.ListContracts(admin_pb.ListContractsRequest(), metadata=op).contracts] == [
        ended.end
    ]

    setting = api.admin.SetSetting(admin_pb.SetSettingRequest(key="internal_floor_gpus", value="1024"), metadata=op)
    assert (setting.value, setting.is_default) == ("1024", False)
    e = rpc_error(
        lambda: api.admin.SetSetting(admin_pb.SetSettingRequest(key="min_runtime_s", value="-5"), metadata=op)
    )
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_runtime_s" in e.details()
    settings = {s.key: s for s in api.admin.GetSettings(admin_pb.GetSettingsRequest(), metadata=op).settings}
    assert settings["internal_floor_gpus"].value == "1024" and settings["min_runtime_s"].is_default
    assert api.store.policy_config().internal_floor_gpus == 1024

    e = rpc_error(lambda: api.admin.CordonNode(admin_pb.CordonNodeRequest(node_id="gpu-7", reason="x"), metadata=op))
    assert e.code() == grpc.StatusCode.NOT_FOUND  # a node is known once its agent has connected
    api.store._db.execute(
        "INSERT INTO nodes (node_id, agent_version, backend, stream_epoch, last_seq, first_seen_us, last_seen_us)"
        " VALUES ('gpu-7', '1', 'sim', 1, 0, 0, 0)"
    )
    cordon = api.admin.CordonNode(admin_pb.CordonNodeRequest(node_id="gpu-7", reason="XID 79"), metadata=op)
    assert cordon.reason == "XID 79"
    assert [c.node_id for c in api.admin.ListCordons(admin_pb.ListCordonsRequest(), metadata=op).cordons] == ["gpu-7"]
    api.admin.UncordonNode(admin_pb.UncordonNodeRequest(node_id="gpu-7"), metadata=op)
    e = rpc_error(lambda: api.admin.UncordonNode(admin_pb.UncordonNodeRequest(node_id="gpu-7"), metadata=op))
    assert e.code() == grpc.StatusCode.NOT_FOUND


ADMIN_CALLS: list[tuple[str, Any]] = [
    ("CreateTenant", admin_pb.CreateTenantRequest(name="evil")),
    ("ListTenants", admin_pb.ListTenantsRequest()),
    ("CreateToken", admin_pb.CreateTokenRequest(name="evil", role=admin_pb.ROLE_OPERATOR)),
    ("ListTokens", admin_pb.ListTokensRequest()),
    ("RevokeToken", admin_pb.RevokeTokenRequest(name="ops")),
    ("CreateContract", admin_pb.CreateContractRequest(tenant="acme", gpus=8, start=1.0, end=2.0)),
    ("DeleteContract", admin_pb.DeleteContractRequest(contract_id="c-1")),
    ("SetSetting", admin_pb.SetSettingRequest(key="internal_floor_gpus", value="0")),
    ("GetSettings", admin_pb.GetSettingsRequest()),
    ("CordonNode", admin_pb.CordonNodeRequest(node_id="gpu-1", reason="x")),
    ("UncordonNode", admin_pb.UncordonNodeRequest(node_id="gpu-1")),
    ("ListCordons", admin_pb.ListCordonsRequest()),
]


@pytest.mark.parametrize(("method", "request_message"), ADMIN_CALLS, ids=[m for m, _ in ADMIN_CALLS])
@pytest.mark.parametrize("who", ["acme", "internal"])
def test_admin_needs_an_operator(api: ApiServer, who: str, method: str, request_message: Any) -> None:
    e = rpc_error(lambda: getattr(api.admin, method)(request_message, metadata=api.auth(who)))
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED
    assert api.store.authenticate(api.tokens["operator"]) is not None
    assert [t.name for t in api.store.list_tenants()] == ["acme", "globex"]


def test_a_tenant_lists_only_its_own_contracts(api: ApiServer) -> None:
    mine = api.store.create_contract("acme", start=0.0, end=4e9, gpus=8)
    api.store.create_contract("globex", start=0.0, end=4e9, gpus=8)
    listed = api.admin.ListContracts(admin_pb.ListContractsRequest(), metadata=api.auth("acme")).contracts
    assert [c.contract_id for c in listed] == [mine.contract_id]
    e = rpc_error(
        lambda: api.admin.ListContracts(admin_pb.ListContractsRequest(tenant="globex"), metadata=api.auth("acme"))
    )
    assert e.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_refused_token_budget_is_one_per_peer_across_services(api: ApiServer) -> None:
    """20 made-up tokens spent on JobService leave none for AdminService: the budget is the site's."""
    for i in range(20):
        bad = (("authorization", f"Bearer nct_made-up-{i}"),)
        assert rpc_error(lambda md=bad: api.jobs.List(pb.ListJobsRequest(), metadata=md)).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    late = (("authorization", "Bearer nct_made-up-late"),)
    refused = rpc_error(lambda: api.admin.ListTenants(admin_pb.ListTenantsRequest(), metadata=late))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
