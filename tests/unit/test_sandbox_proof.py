"""The sandbox a rank ran in is on the job's record (migration 11): on its allocation while it
runs (and in the Job proto), and as a "sandbox" event that outlives the allocation."""

from __future__ import annotations

import json

from neocloud.scheduler.api.convert import job_to_proto
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store import JobStore, open_db
from neocloud.scheduler.store.records import JobSpec, JobState

PROOF = json.dumps(
    {"uid": 218592, "gid": 218592, "devices": ["/dev/nvidia1"], "memory_bytes": 1 << 30, "pids_max": 4096, "cpus": 2}
)


def test_the_proof_is_on_the_allocation_the_proto_and_the_events() -> None:
    store = JobStore(open_db(":memory:"))
    store.create_tenant("acme")
    job = store.submit(JobSpec("acme", "r", JobClass.SPOT, 2, 2, command=("true",)))
    store.start(job.job_id, [("n1", ["g0", "g1"])], now=10.0)
    store.set_allocation_gpus(job.job_id, "n1", ["g1", "g0"], PROOF)
    (alloc,) = store.allocations(job.job_id)
    assert alloc.sandbox == PROOF and alloc.gpu_uuids == ("g1", "g0")
    assert json.loads(job_to_proto(store.get(job.job_id), [alloc]).allocations[0].sandbox)["uid"] == 218592
    store.finish(job.job_id, JobState.SUCCEEDED, 0, "", now=20.0)
    (closed,) = store.allocations(job.job_id)
    assert closed.sandbox == PROOF  # kept when the allocation closes
    events = [e for e in store.events_since(job.job_id) if e.kind == "sandbox"]
    assert [e.message for e in events] == [f"n1: {PROOF}"]


def test_a_rank_of_the_labs_own_tooling_records_no_sandbox_event() -> None:
    store = JobStore(open_db(":memory:"))
    job = store.submit(JobSpec("internal", "r", JobClass.INTERNAL, 1, 1, command=("true",)))
    store.start(job.job_id, [("n1", ["g0"])], now=10.0)
    store.set_allocation_gpus(job.job_id, "n1", ["g0"])
    assert store.allocations(job.job_id)[0].sandbox == ""
    assert not [e for e in store.events_since(job.job_id) if e.kind == "sandbox"]
