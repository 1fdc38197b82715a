"""Moving a GPU between nodes in the store: ownership moves, the energy it earned does
not (the ledger's rows stay as they were), and an audit event records who, when, from,
to and why. Refusals carry the documented errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobClass, JobSpec

GPU = "GPU-00000000-0000-0000-0000-00000000000a"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(open_db(tmp_path / "scheduler.db"), clock=lambda: 1_800_000_000.0)
    db = s._db
    for node in ("node-x", "node-y"):
        db.execute(
            "INSERT INTO nodes (node_id, agent_version, backend, stream_epoch, last_seq, first_seen_us, last_seen_us)"
            " VALUES (?, '1', 'sim', 1, 5, 0, 0)",
            (node,),
        )
    db.execute(
        "INSERT INTO gpus (uuid, node_id, gpu_index, model, memory_total_bytes, power_limit_mw, energy_last_mj,"
        " energy_last_us, energy_total_mj) VALUES (?, 'node-x', 0, 'NVIDIA H200', 1, 700000, 9000, 5, 123456)",
        (GPU,),
    )
    db.execute(
        "INSERT INTO meter_cells (uuid, owner, hour, energy_mj, util_sum, util_count, peak_power_mw,"
        " memory_peak_bytes) VALUES (?, '', 0, 123456, 0, 0, 0, 0)",
        (GPU,),
    )
    db.execute(
        "INSERT INTO meter_watermarks (uuid, attributed_to_us, attributed_total_mj) VALUES (?, 5, 123456)", (GPU,)
    )
    yield s
    s.close()


def row(store: JobStore, sql: str) -> tuple[object, ...]:
    return tuple(store._db.execute(sql, (GPU,)).fetchone())


def test_a_move_changes_the_owner_keeps_the_energy_and_is_audited(store: JobStore) -> None:
    moved = store.move_gpu(GPU, "node-y", "swapped into y's chassis", "ops-alice", now=1_800_000_100.0)
    assert (moved.from_node, moved.to_node, moved.energy_total_mj) == ("node-x", "node-y", 123456)
    # Owner moves; the total goes on; the old host's counter reading is no baseline for the new one.
    # On node-y it starts afresh: no baseline, no total, no watermark (a restart attributes nothing twice)...
    afresh = "SELECT node_id, energy_total_mj, energy_last_mj, energy_last_us FROM gpus WHERE uuid = ?"
    assert row(store, afresh) == ("node-y", 0, None, 0)
    assert store._db.execute("SELECT COUNT(*) FROM meter_watermarks").fetchone() == (0,)
    # ...and what it earned on node-x stays in the ledger as it was.
    assert row(store, "SELECT owner, energy_mj FROM meter_cells WHERE uuid = ?") == ("", 123456.0)
    [event] = store.audit_events(GPU)
    assert (event.actor, event.action, event.subject, event.at, event.reason) == (
        "ops-alice",
        "move-gpu",
        GPU,
        1_800_000_100.0,
        "swapped into y's chassis",
    )
    assert event.detail == {"from": "node-x", "to": "node-y", "energy_total_mj": 123456}
    assert store.audit_events() == [event] and store.audit_events("GPU-other") == []


@pytest.mark.parametrize(
    ("uuid", "node", "error", "words"),
    [
        ("GPU-ffffffff-0000-0000-0000-000000000000", "node-y", NotFoundError, "no GPU"),
        (GPU, "node-z", NotFoundError, "no node 'node-z'"),
        ("not-a-uuid", "node-y", InvalidArgumentError, "gpu_uuid"),
        ("GPU-" + "a" * 93, "node-y", InvalidArgumentError, "gpu_uuid"),
        (GPU, "../etc", InvalidArgumentError, "to_node"),
        (GPU, "", InvalidArgumentError, "to_node"),
        (GPU, "node-x", FailedPreconditionError, "already"),
    ],
)
def test_refusals_change_nothing(store: JobStore, uuid: str, node: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        store.move_gpu(uuid, node, "", "ops")
    assert row(store, "SELECT node_id, energy_last_mj FROM gpus WHERE uuid = ?") == ("node-x", 9000)
    assert store.audit_events() == []


def test_a_gpu_a_job_holds_does_not_move(store: JobStore) -> None:
    store.create_tenant("acme")
    spec = JobSpec("acme", "r1", JobClass.SPOT, 1, 1, command=("true",))
    job = store.submit(spec)
    store.start(job.job_id, [("node-x", (GPU,))])
    with pytest.raises(FailedPreconditionError, match=f"job {job.job_id} holds GPU"):
        store.move_gpu(GPU, "node-y", "", "ops")
    store.close_allocations(job.job_id, 1_800_000_050.0, "exit")
    assert store.move_gpu(GPU, "node-y", "", "ops").to_node == "node-y"


def test_a_reason_is_checked(store: JobStore) -> None:
    with pytest.raises(InvalidArgumentError, match="reason"):
        store.move_gpu(GPU, "node-y", "x" * 1025, "ops")
    with pytest.raises(InvalidArgumentError, match="control"):
        store.move_gpu(GPU, "node-y", "a\nb", "ops")


def test_a_gpu_whose_energy_is_not_metered_yet_does_not_move(store: JobStore) -> None:
    store._db.execute("UPDATE meter_watermarks SET attributed_total_mj = 100000")
    with pytest.raises(FailedPreconditionError, match=r"23\.456 J of GPU .* are not metered yet"):
        store.move_gpu(GPU, "node-y", "", "ops")
    assert row(store, "SELECT node_id, energy_total_mj FROM gpus WHERE uuid = ?") == ("node-x", 123456)
