"""The durable job state: transitions, idempotent submit, whole transactions,
usage, tokens, contracts, settings and cordons."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass
from neocloud.scheduler.store.admin import token_hash
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Job, JobSpec, JobState, Principal, Role

GPUS = [f"GPU-{i}" for i in range(16)]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[JobStore]:
    db = open_db(db_path)
    s = JobStore(db, clock=lambda: 1000.0)
    s.create_tenant("acme", now=1.0)
    s.create_tenant("globex", weight=2.0, now=1.0)
    yield s
    db.close()


def spec(**overrides: object) -> JobSpec:
    fields: dict[str, object] = {
        "tenant": "acme",
        "client_request_id": "req-1",
        "job_class": JobClass.SPOT,
        "gpus": 8,
        "gpus_per_node": 8,
        "command": ("python", "train.py"),
    }
    fields.update(overrides)
    return JobSpec(**fields)  # type: ignore[arg-type]


def count(store: JobStore, table: str) -> int:
    return int(store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# --- submit --------------------------------------------------------------------------------------


def test_submit_queues_the_job_with_an_event(store: JobStore) -> None:
    job = store.submit(spec(env={"LR": "0.1"}), now=10.0)
    assert job.job_id.startswith("j-") and len(job.job_id) == 14
    assert job.state is JobState.QUEUED and job.submitted_at == job.queue_position == 10.0
    assert store.get(job.job_id) == job
    assert [(e.kind, e.state) for e in store.events_since(job.job_id)] == [("submitted", JobState.QUEUED)]


def test_submit_is_idempotent_per_tenant_and_request_id(store: JobStore) -> None:
    first = store.submit(spec(), now=10.0)
    assert store.submit(spec(), now=20.0) == first
    assert count(store, "jobs") == 1 and count(store, "job_events") == 1
    with pytest.raises(AlreadyExistsError, match=r"req-1.*different spec"):
        store.submit(spec(gpus=16), now=30.0)
    other = store.submit(spec(tenant="globex"), now=40.0)  # the id is per tenant
    assert other.job_id != first.job_id


def test_concurrent_submits_of_one_request_make_one_job(db_path: Path, store: JobStore) -> None:
    stores = [JobStore(open_db(db_path)) for _ in range(4)] + [store] * 4
    results: list[str] = []
    barrier = threading.Barrier(len(stores))

    def submit(s: JobStore) -> None:
        barrier.wait()
        results.append(s.submit(spec()).job_id)

    threads = [threading.Thread(target=submit, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == len(stores) and len(set(results)) == 1
    assert count(store, "jobs") == 1


# --- group commit -------------------------------------------------------------------------------


def doom_commits(store: JobStore) -> None:
    """Make COMMIT itself fail for any transaction that queued a job whose request id starts with
    "doomed": a deferred foreign key that only COMMIT checks (as a full disk or an I/O error would)."""
    store._db.executescript(
        """
        CREATE TABLE doom (job_id TEXT REFERENCES jobs(job_id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER doom_commit AFTER INSERT ON jobs WHEN NEW.client_request_id LIKE 'doomed%'
        BEGIN INSERT INTO doom VALUES ('no-such-job'); END;
        """
    )


def test_a_group_of_submits_is_one_durable_commit(db_path: Path, store: JobStore) -> None:
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    outcomes = store.submit_many([(spec(client_request_id=f"r{i}"), 10.0 + i) for i in range(5)])
    store._db.set_trace_callback(None)
    assert statements.count("COMMIT") == 1 and statements.count("BEGIN IMMEDIATE") == 1
    jobs = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(jobs) == 5 and [j.submitted_at for j in jobs] == [10.0, 11.0, 12.0, 13.0, 14.0]
    reopened = JobStore(open_db(db_path))  # another connection sees every job and its event
    assert [reopened.get(j.job_id) for j in jobs] == jobs
    assert all(len(reopened.events_since(j.job_id)) == 1 for j in jobs)


def test_one_request_id_twice_in_a_group_makes_one_job(store: JobStore) -> None:
    first, again, changed, other_tenant = store.submit_many(
        [(spec(), 1.0), (spec(), 2.0), (spec(gpus=16), 3.0), (spec(tenant="globex"), 4.0)]
    )
    assert isinstance(first, Job) and again == first
    assert isinstance(changed, AlreadyExistsError) and "different spec" in str(changed)
    assert isinstance(other_tenant, Job) and other_tenant.job_id != first.job_id
    assert count(store, "jobs") == 2 and count(store, "job_events") == 2
    assert store.submit(spec(), now=5.0) == first  # and later, as before


def test_a_refused_submit_in_a_group_leaves_the_others_alone(store: JobStore) -> None:
    # "boom" fails after its job row is written (at its event): its savepoint must take the row back.
    store._db.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON job_events"
        " WHEN (SELECT client_request_id FROM jobs WHERE job_id = NEW.job_id) = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    reserved = {"job_class": JobClass.RESERVED}
    outcomes = store.submit_many(
        [
            (spec(client_request_id="ok-1"), 1.0),
            (spec(client_request_id="bad", gpus=0), 1.0),
            (spec(client_request_id="nobody", tenant="nobody"), 1.0),
            (spec(client_request_id="no-contract", contract_id="c-nope", **reserved), 1.0),
            (spec(client_request_id="boom"), 1.0),
            (spec(client_request_id="ok-2"), 1.0),
            (spec(client_request_id="ok-1"), 2.0),
        ]
    )
    kinds = [type(o) for o in outcomes]
    assert kinds == [
        Job, InvalidArgumentError, FailedPreconditionError, InvalidArgumentError, sqlite3.IntegrityError, Job, Job
    ]  # fmt: skip
    assert outcomes[6] == outcomes[0]
    assert {j.spec.client_request_id for j in store.list_jobs()} == {"ok-1", "ok-2"}
    assert count(store, "job_events") == 2
    with pytest.raises(InvalidArgumentError, match="gpus"):  # submit raises what submit_many returns
        store.submit(spec(client_request_id="bad", gpus=0))


def test_a_failed_group_commit_writes_nothing(store: JobStore) -> None:
    doom_commits(store)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.submit_many([(spec(client_request_id="innocent"), 1.0), (spec(client_request_id="doomed"), 1.0)])
    assert count(store, "jobs") == 0 and count(store, "job_events") == 0
    assert not store._db.in_transaction
    [job] = store.submit_many([(spec(client_request_id="innocent"), 2.0)])  # the store goes on; a retry works
    assert isinstance(job, Job) and count(store, "jobs") == 1


def test_an_error_that_ends_the_whole_transaction_fails_the_whole_group(store: JobStore) -> None:
    """SQLite rolls back the whole transaction on an interrupted INSERT (as on some I/O errors): the
    group must fail as one, not go on outside a transaction."""
    inserts = 0
    interrupted = False

    def trace(sql: str) -> None:
        nonlocal inserts
        inserts += sql.startswith("INSERT INTO jobs")

    def progress() -> int:
        nonlocal interrupted
        if inserts == 2 and not interrupted:
            interrupted = True
            return 1
        return 0

    store._db.set_trace_callback(trace)
    store._db.set_progress_handler(progress, 1)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        store.submit_many([(spec(client_request_id=r), 1.0) for r in ("a", "b", "c")])
    store._db.set_progress_handler(None, 1)
    store._db.set_trace_callback(None)
    assert interrupted and count(store, "jobs") == 0 and count(store, "job_events") == 0
    assert not store._db.in_transaction


def test_write_count_moves_with_the_tables_own_writes(store: JobStore) -> None:
    before = store.write_count("api_tokens")
    store.submit(spec())
    assert store.write_count("api_tokens") == before
    store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    store.revoke_token("acme-ci")
    assert store.write_count("api_tokens") == before + 2
    with pytest.raises(ValueError, match="table name"):
        store.write_count("jobs; DROP TABLE jobs")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"gpus": 0}, "gpus"),
        ({"gpus": 4097, "gpus_per_node": 1}, "gpus"),
        ({"gpus_per_node": 9, "gpus": 9}, "gpus_per_node"),
        ({"gpus": 12, "gpus_per_node": 8}, "gpus_per_node"),
        ({"grace_s": -1.0}, "grace_s"),
        ({"grace_s": 3601.0}, "grace_s"),
        ({"grace_s": float("nan")}, "grace_s"),
        ({"max_runtime_s": 0.0}, "max_runtime_s"),
        ({"env": {"lower": "x"}}, "env"),
        ({"env": {f"K{i}": "v" for i in range(65)}}, "env"),
        ({"command": ()}, "command"),
        ({"command": ("x",) * 257}, "command"),
        ({"command": ("python", "y" * 4097)}, "command[1]"),
        ({"command": None, "entrypoint": None}, "command"),
        ({"entrypoint": "pkg.mod:main"}, "exactly one of command"),
        ({"command": None, "entrypoint": "pkg.mod"}, "entrypoint"),
        ({"client_request_id": "r" * 129}, "client_request_id"),
        ({"client_request_id": ""}, "client_request_id"),
        ({"gpu_model": "H" * 97}, "gpu_model"),
        ({"job_class": JobClass.RESERVED}, "contract_id"),
        ({"contract_id": "c-1"}, "contract_id"),
        ({"job_class": JobClass.INTERNAL}, "job_class"),
        ({"tenant": INTERNAL_TENANT}, "job_class"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(store: JobStore, overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        store.submit(spec(**overrides))
    assert field in str(e.value)
    assert count(store, "jobs") == 0 and count(store, "job_events") == 0


def test_internal_jobs_belong_to_the_internal_tenant(store: JobStore) -> None:
    job = store.submit(spec(tenant=INTERNAL_TENANT, job_class=JobClass.INTERNAL))
    assert job.tenant == INTERNAL_TENANT
    with pytest.raises(FailedPreconditionError, match="tenant 'nobody' does not exist"):
        store.submit(spec(tenant="nobody"))


def test_reserved_jobs_need_a_live_contract_of_their_own(store: JobStore) -> None:
    mine = store.create_contract("acme", start=0.0, end=5000.0, gpus=8, gpu_model="H200")
    theirs = store.create_contract("globex", start=0.0, end=5000.0, gpus=8)
    ended = store.create_contract("acme", start=0.0, end=500.0, power_w=1e6)
    reserved = {"job_class": JobClass.RESERVED}
    with pytest.raises(InvalidArgumentError, match=r"contract_id .* is not one of your contracts"):
        store.submit(spec(contract_id=theirs.contract_id, **reserved))
    with pytest.raises(InvalidArgumentError, match="contract_id"):
        store.submit(spec(contract_id="c-nope", **reserved))
    with pytest.raises(FailedPreconditionError, match="has ended"):
        store.submit(spec(contract_id=ended.contract_id, **reserved))
    with pytest.raises(InvalidArgumentError, match="gpus"):
        store.submit(spec(contract_id=mine.contract_id, gpus=16, **reserved))
    with pytest.raises(InvalidArgumentError, match="gpu_model"):
        store.submit(spec(contract_id=mine.contract_id, gpu_model="H100", **reserved))
    assert count(store, "jobs") == 0
    job = store.submit(spec(contract_id=mine.contract_id, **reserved))
    assert job.spec.contract_id == mine.contract_id


# --- transitions ---------------------------------------------------------------------------------


def test_a_job_runs_and_finishes(store: JobStore) -> None:
    job = store.submit(spec(gpus=16), now=10.0)
    opened = store.start(job.job_id, [("node-1", GPUS[:8]), ("node-2", GPUS[8:])], now=20.0)
    assert [(a.node_id, len(a.gpu_uuids), a.end) for a in opened] == [("node-1", 8, None), ("node-2", 8, None)]
    assert store.get(job.job_id).state is JobState.RUNNING
    [(running, allocations)] = store.running()
    assert running.job_id == job.job_id and allocations == opened
    assert store.queued() == []
    assert store.record_checkpoint(job.job_id, 25.0)
    done = store.finish(job.job_id, JobState.SUCCEEDED, 0, "ok", now=30.0)
    assert (done.state, done.exit_code, done.ended_at, done.last_checkpoint_at) == (JobState.SUCCEEDED, 0, 30.0, 25.0)
    assert {(a.end, a.end_reason) for a in store.allocations(job.job_id)} == {(30.0, "succeeded")}
    assert store.finish(job.job_id, JobState.SUCCEEDED, 0, "ok", now=31.0) == done  # a repeated report
    with pytest.raises(FailedPreconditionError, match="succeeded already"):
        store.finish(job.job_id, JobState.FAILED, 1, "", now=32.0)
    assert not store.record_checkpoint(job.job_id, 40.0)
    kinds = [e.kind for e in store.events_since(job.job_id)]
    assert kinds == ["submitted", "started", "succeeded"]
    assert [e.kind for e in store.events_since(job.job_id, store.events_since(job.job_id)[0].event_id)] == kinds[1:]


def test_start_refuses_a_bad_placement_and_writes_nothing(store: JobStore) -> None:
    other = store.submit(spec(client_request_id="other", gpus=4, gpus_per_node=4))
    store.start(other.job_id, [("node-3", GPUS[:4])])
    job = store.submit(spec(gpus=16))
    store.cordon("node-9", "bad fan")
    bad = [
        ([("node-1", GPUS[:8])], "needs 16 GPU"),
        ([("node-1", GPUS[:4]), ("node-2", GPUS[4:16])], "8 on each node"),
        ([("node-1", GPUS[:8]), ("node-1", GPUS[8:])], "twice"),
        ([("node-1", GPUS[:8]), ("node-2", GPUS[:8])], "twice"),
        ([("node-1", GPUS[8:]), ("node-9", GPUS[:8])], "node-9 are cordoned"),
        ([("node-1", GPUS[8:]), ("node-3", GPUS[:8])], "held by job " + other.job_id),
    ]
    for placement, message in bad:
        with pytest.raises(FailedPreconditionError, match=message):
            store.start(job.job_id, placement)
    assert store.get(job.job_id).state is JobState.QUEUED and store.allocations(job.job_id) == []
    store.start(job.job_id, [("node-1", GPUS[:8]), ("node-2", GPUS[8:])])
    with pytest.raises(FailedPreconditionError, match="running, not queued"):
        store.start(job.job_id, [("node-1", GPUS[:8]), ("node-2", GPUS[8:])])


def test_preempted_jobs_are_requeued_at_their_original_place(store: JobStore) -> None:
    first = store.submit(spec(client_request_id="a"), now=10.0)
    second = store.submit(spec(client_request_id="b"), now=11.0)
    store.start(first.job_id, [("node-1", GPUS[:8])], now=20.0)
    assert [j.job_id for j in store.queued()] == [second.job_id]
    notified = store.notify_preemption(first.job_id, now=30.0, reason="internal reclaims its floor")
    assert (notified.state, notified.preemption_notice_at) == (JobState.PREEMPTING, 30.0)
    assert store.notify_preemption(first.job_id, now=31.0) == notified
    closed = store.close_allocations(first.job_id, at=35.0, end_reason="preempted")
    assert [(a.end, a.end_reason) for a in closed] == [(35.0, "preempted")]
    requeued = store.requeue(first.job_id, now=36.0, reason="preempted by internal work")
    assert (requeued.state, requeued.requeues, requeued.started_at, requeued.submitted_at) == (
        JobState.QUEUED, 1, None, 10.0,
    )  # fmt: skip
    assert [j.job_id for j in store.queued()] == [first.job_id, second.job_id]
    assert [(a.end, a.end_reason) for a in store.allocations(first.job_id)] == [(35.0, "preempted")]
    kinds = [e.kind for e in store.events_since(first.job_id)]
    assert kinds == ["submitted", "started", "preemption_notice", "requeued"]
    with pytest.raises(FailedPreconditionError, match="queued, not running"):
        store.notify_preemption(first.job_id)


def test_requeue_closes_what_is_still_open(store: JobStore) -> None:
    job = store.submit(spec())
    store.start(job.job_id, [("node-1", GPUS[:8])], now=20.0)
    store.requeue(job.job_id, now=50.0, reason="node lost")
    assert [(a.end, a.end_reason) for a in store.allocations(job.job_id)] == [(50.0, "requeued")]
    store.start(job.job_id, [("node-1", GPUS[:8])], now=60.0)  # the GPUs are free again


def test_cancel(store: JobStore) -> None:
    queued = store.submit(spec(client_request_id="q"))
    cancelled = store.request_cancel(queued.job_id, now=5.0)
    assert (cancelled.state, cancelled.ended_at) == (JobState.CANCELLED, 5.0)
    assert store.request_cancel(queued.job_id) == cancelled
    running = store.submit(spec(client_request_id="r"))
    store.start(running.job_id, [("node-1", GPUS[:8])], now=10.0)
    flagged = store.request_cancel(running.job_id, now=11.0)
    assert (flagged.state, flagged.cancel_requested) == (JobState.RUNNING, True)
    # The controller stops it; a requeue of a job whose cancellation was asked for ends it instead.
    ended = store.requeue(running.job_id, now=12.0)
    assert ended.state is JobState.CANCELLED
    assert [a.end_reason for a in store.allocations(running.job_id)] == ["cancelled"]
    done = store.submit(spec(client_request_id="d"))
    store.finish(done.job_id, JobState.FAILED, None, "unschedulable")
    with pytest.raises(FailedPreconditionError, match="failed already"):
        store.request_cancel(done.job_id)
    with pytest.raises(NotFoundError, match="no job 'j-nope'"):
        store.request_cancel("j-nope")


def test_a_failed_write_leaves_nothing_half_done(store: JobStore) -> None:
    job = store.submit(spec(client_request_id="a"))
    store._db.execute(
        "CREATE TRIGGER fail_events BEFORE INSERT ON job_events BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        store.submit(spec(client_request_id="b"))
    with pytest.raises(sqlite3.IntegrityError):
        store.start(job.job_id, [("node-1", GPUS[:8])])
    assert count(store, "jobs") == 1 and count(store, "allocations") == 0
    assert store.get(job.job_id).state is JobState.QUEUED
    store._db.execute("DROP TRIGGER fail_events")
    store.start(job.job_id, [("node-1", GPUS[:8])])  # the store is usable afterwards


def test_usage_counts_gpu_seconds_of_closed_and_open_allocations(store: JobStore) -> None:
    a = store.submit(spec(client_request_id="a", gpus=8))
    b = store.submit(spec(client_request_id="b", gpus=2, gpus_per_node=2, tenant="globex"))
    store.start(a.job_id, [("node-1", GPUS[:8])], now=100.0)
    store.finish(a.job_id, JobState.SUCCEEDED, 0, "", now=200.0)
    store.start(b.job_id, [("node-2", GPUS[8:10])], now=150.0)
    usage = store.usage_gpu_seconds_since(120.0, now=300.0)
    assert usage == {"acme": pytest.approx(8 * 80.0), "globex": pytest.approx(2 * 150.0)}
    assert store.usage_gpu_seconds_since(250.0, now=300.0) == {"globex": pytest.approx(2 * 50.0)}
    assert {x.job_id for x in store.allocations_since(190.0)} == {a.job_id, b.job_id}
    assert {x.job_id for x in store.allocations_since(210.0)} == {b.job_id}


def test_list_jobs_filters_by_tenant_and_state(store: JobStore) -> None:
    a = store.submit(spec(client_request_id="a"), now=1.0)
    b = store.submit(spec(client_request_id="b"), now=2.0)
    c = store.submit(spec(client_request_id="c", tenant="globex"), now=3.0)
    store.request_cancel(a.job_id)
    assert [j.job_id for j in store.list_jobs()] == [c.job_id, b.job_id, a.job_id]
    assert [j.job_id for j in store.list_jobs("acme")] == [b.job_id, a.job_id]
    assert [j.job_id for j in store.list_jobs("acme", [JobState.CANCELLED])] == [a.job_id]
    assert len(store.list_jobs(limit=1)) == 1


def test_state_survives_a_restart(db_path: Path, store: JobStore) -> None:
    job = store.submit(spec(env={"A": "1"}, max_runtime_s=60.0, gpu_model="H200", requeue_on_preempt=False))
    reopened = JobStore(open_db(db_path))
    assert reopened.get(job.job_id) == job
    assert dataclasses.asdict(reopened.get(job.job_id).spec)["env"] == {"A": "1"}


# --- tokens, tenants, contracts, settings, cordons ------------------------------------------------


def test_tokens_are_stored_hashed_and_authenticate_until_revoked(store: JobStore) -> None:
    token = store.create_token(Role.TENANT, "acme-ci", tenant="acme", now=5.0)
    assert token.startswith("nct_") and len(token) > 40
    dump = "\n".join(store._db.iterdump())
    assert token not in dump and token_hash(token) in dump
    assert store.authenticate(token) == Principal(Role.TENANT, "acme", "acme-ci")
    assert store.authenticate(token + "x") is None and store.authenticate("") is None
    with pytest.raises(AlreadyExistsError):
        store.create_token(Role.TENANT, "acme-ci", tenant="acme")
    store.revoke_token("acme-ci", now=6.0)
    assert store.authenticate(token) is None
    with pytest.raises(NotFoundError):
        store.revoke_token("acme-ci")
    store.create_token(Role.TENANT, "acme-ci", tenant="acme")  # the name is free again
    assert [t.revoked_at for t in store.list_tokens(include_revoked=True)] == [6.0, None]


@pytest.mark.parametrize(
    ("role", "tenant", "error", "message"),
    [
        (Role.TENANT, None, InvalidArgumentError, "tenant is required"),
        (Role.OPERATOR, "acme", InvalidArgumentError, "not allowed"),
        (Role.TENANT, "nobody", NotFoundError, "create it first"),
    ],
)
def test_token_roles_and_tenants_must_match(
    store: JobStore, role: Role, tenant: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        store.create_token(role, "t1", tenant=tenant)
    assert store.list_tokens() == []


def test_bootstrap_makes_one_operator_token(store: JobStore) -> None:
    token = store.bootstrap_operator_token("first-operator")
    assert token is not None
    assert store.authenticate(token) == Principal(Role.OPERATOR, None, "first-operator")
    assert store.bootstrap_operator_token("again") is None
    store.revoke_token("first-operator")
    assert store.bootstrap_operator_token("again") is not None  # locked out: start again


def test_tenants(store: JobStore) -> None:
    assert [(t.name, t.weight) for t in store.list_tenants()] == [("acme", 1.0), ("globex", 2.0)]
    with pytest.raises(AlreadyExistsError):
        store.create_tenant("acme")
    for bad in ("Acme", "-x", "", "a" * 64, INTERNAL_TENANT):
        with pytest.raises(InvalidArgumentError, match="tenant"):
            store.create_tenant(bad)
    with pytest.raises(InvalidArgumentError, match="weight"):
        store.create_tenant("initech", weight=0.0)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"start": 10.0, "end": 10.0, "gpus": 8}, "before end"),
        ({"start": 0.0, "end": 10.0}, "exactly one of gpus"),
        ({"start": 0.0, "end": 10.0, "gpus": 8, "power_w": 1000.0}, "exactly one of gpus"),
        ({"start": 0.0, "end": 10.0, "gpus": -1}, "gpus"),
        ({"start": 0.0, "end": float("inf"), "gpus": 1}, "end"),
        ({"start": 0.0, "end": 10.0, "power_w": 1e6, "tenant": "nobody"}, "does not exist"),
    ],
)
def test_contracts_are_validated(store: JobStore, terms: dict[str, object], message: str) -> None:
    terms = {"tenant": "acme", **terms}
    with pytest.raises((InvalidArgumentError, NotFoundError), match=message):
        store.create_contract(**terms)  # type: ignore[arg-type]
    assert store.list_contracts() == []


def test_contracts_crud(store: JobStore) -> None:
    c = store.create_contract("acme", start=0.0, end=5000.0, gpus=8, gpu_model="H200", now=3.0)
    assert store.get_contract(c.contract_id) == c and store.list_contracts("globex") == []
    assert c.as_policy().active(100.0) and not c.as_policy().active(5000.0)
    job = store.submit(spec(job_class=JobClass.RESERVED, contract_id=c.contract_id))
    # A started contract is ended, never deleted: its past stays billable (test_contract_lifecycle.py).
    with pytest.raises(FailedPreconditionError, match="ended, not deleted"):
        store.delete_contract(c.contract_id, now=10.0)
    store.request_cancel(job.job_id)
    assert store.end_contract(c.contract_id, at=20.0, now=10.0).end == 20.0
    assert store.get_contract(c.contract_id).end == 20.0
    with pytest.raises(NotFoundError):
        store.delete_contract("c-none")


def test_settings_are_typed_and_feed_the_policy_config(store: JobStore) -> None:
    defaults = store.get_settings()
    assert defaults["one_tenant_per_node"] is True and defaults["site_power_budget_w"] == float("inf")
    assert store.set_setting("internal_floor_gpus", " 512 ") == 512
    assert store.set_setting("one_tenant_per_node", "off") is False
    assert store.set_setting("site_power_budget_w", "3e8") == 3e8
    assert store.stored_settings() == {
        "internal_floor_gpus": "512",
        "one_tenant_per_node": "false",
        "site_power_budget_w": "300000000.0",
    }
    config = store.policy_config()
    assert (config.internal_floor_gpus, config.one_tenant_per_node, config.site_power_budget_w) == (512, False, 3e8)
    assert config.tenant_weights == {"acme": 1.0, "globex": 2.0}
    for key, value, message in [
        ("internal_floor_gpus", "-1", "between 0"),
        ("internal_floor_gpus", "1.5", "whole number"),
        ("site_power_budget_w", "0", "more than 0"),
        ("min_runtime_s", "nan", "finite"),
        ("one_tenant_per_node", "maybe", "true or false"),
        ("colour", "blue", "unknown setting"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            store.set_setting(key, value)
    assert store.get_settings()["internal_floor_gpus"] == 512


def test_cordons(store: JobStore) -> None:
    store.cordon("node-1", "XID 79", now=5.0)
    store.cordon("node-1", "XID 79, waiting for RMA", now=6.0)
    assert store.cordoned() == frozenset({"node-1"})
    [record] = store.list_cordons()
    assert (record.reason, record.at) == ("XID 79, waiting for RMA", 5.0)
    with pytest.raises(InvalidArgumentError, match="node_id"):
        store.cordon("../etc", "x")
    with pytest.raises(InvalidArgumentError, match="reason"):
        store.cordon("node-2", "")
    store.uncordon("node-1")
    assert store.cordoned() == frozenset()
    with pytest.raises(NotFoundError, match="not cordoned"):
        store.uncordon("node-1")
