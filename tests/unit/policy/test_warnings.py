"""Early reclaim warnings (rule 13).

The rule: a running job gets a ReclaimWarning when queued internal or reserved
(inside its contract) demand does not fit in free capacity and the only way
to make room is a plan that preempts it, but the plan cannot run yet because
some of its victims are younger than min_runtime_s; every victim of that plan
is warned (preemption follows once the youngest may be preempted), and the
plan's nodes are held. Likewise for the queued jobs of a contract that starts
within reclaim_warning_s: the victims the holder would need at the start are
warned now. Nothing is preempted for a warning.
"""

from __future__ import annotations

from neocloud.scheduler.policy.engine import schedule
from tests.unit.policy.factories import (
    INTERNAL,
    NOW,
    ON_DEMAND,
    RESERVED,
    contract,
    fleet,
    job,
    placed,
    policy_input,
    preempted,
    running,
    warned,
)


def test_internal_demand_warns_spot_it_cannot_preempt_yet() -> None:
    run = [running("young", {"n0": 8}, started_at=NOW - 20)]
    d = schedule(policy_input(fleet(1), [job("i", 8, cls=INTERNAL)], run, min_runtime_s=60, internal_floor_gpus=8))
    assert d.preemptions == ()
    assert warned(d) == ["young"]
    # A time (NOW + 40 s), not a countdown: the same words in the next pass, so the job is warned once.
    assert d.warnings[0].reason == "internal work needs these GPUs: preemption may follow at 1970-01-12 13:47:20 UTC"
    assert "at 1970-01-12 13:47:20 UTC" in d.pending["i"]
    again = schedule(policy_input(fleet(1), [job("i", 8, cls=INTERNAL)], run, now=NOW + 7, internal_floor_gpus=8))
    assert again.warnings == d.warnings and again.pending == d.pending
    later = schedule(policy_input(fleet(1), [job("i", 8, cls=INTERNAL)], run, now=NOW + 41, internal_floor_gpus=8))
    assert preempted(later) == ["young"] and later.warnings == ()


def test_every_victim_of_the_pending_plan_is_warned() -> None:
    run = [
        running("old", {"n0": [0, 1, 2, 3]}, started_at=NOW - 3600),
        running("young", {"n0": [4, 5, 6, 7]}, started_at=NOW - 5),
    ]
    d = schedule(policy_input(fleet(1), [job("i", 8, cls=INTERNAL)], run))
    assert d.preemptions == ()  # nothing is preempted before the whole room can be made
    assert sorted(warned(d)) == ["old", "young"]


def test_reserved_demand_warns_too() -> None:
    c = contract("c-1", gpus=8)
    run = [running("lent", {"n0": 8}, lent=True, started_at=NOW - 10)]
    d = schedule(policy_input(fleet(1), [job("r", 8, cls=RESERVED, tenant="bigco", contract="c-1")], run, [c]))
    assert warned(d) == ["lent"] and d.preemptions == ()
    assert d.warnings[0].reason.startswith("reserved contract c-1 needs these GPUs")


def test_a_contract_about_to_start_warns_the_spot_work_it_will_need() -> None:
    c = contract("c-1", gpus=8, start=NOW + 120)
    run = [running("lent", {"n0": 8}, lent=True), running("other", {"n1": 8}, tenant="x", cls=ON_DEMAND)]
    queue = [job("r", 8, cls=RESERVED, tenant="bigco", contract="c-1")]
    d = schedule(policy_input(fleet(2), queue, run, [c], reclaim_warning_s=300))
    assert d.preemptions == ()
    assert warned(d) == ["lent"]
    assert "starts at" in d.warnings[0].reason
    far = schedule(
        policy_input(fleet(2), queue, run, [contract("c-1", gpus=8, start=NOW + 900)], reclaim_warning_s=300)
    )
    assert far.warnings == ()


def test_no_warning_when_free_capacity_suffices_or_for_on_demand_demand() -> None:
    run = [running("young", {"n0": 8}, started_at=NOW - 20)]
    d = schedule(policy_input(fleet(2), [job("i", 8, cls=INTERNAL)], run))
    assert d.warnings == () and "i" in placed(d)
    d2 = schedule(policy_input(fleet(1), [job("o", 8, cls=ON_DEMAND, tenant="x")], run))
    assert d2.warnings == () and d2.preemptions == ()


def test_work_already_under_notice_is_not_warned() -> None:
    run = [
        running("leaving", {"n0": [0, 1, 2, 3]}, notice_at=NOW - 1),
        running("young", {"n0": [4, 5, 6, 7]}, started_at=NOW - 5),
    ]
    d = schedule(policy_input(fleet(1), [job("i", 8, cls=INTERNAL)], run))
    assert warned(d) == ["young"]


def test_a_warned_job_is_not_also_preempted() -> None:
    run = [running("young", {"n0": 8}, started_at=NOW - 5), running("old", {"n1": 8}, started_at=NOW - 3600)]
    queue = [job("i", 16, cls=INTERNAL), job("o", 8, cls=ON_DEMAND, tenant="x", submitted_at=1)]
    d = schedule(policy_input(fleet(2), queue, run))
    assert set(warned(d)).isdisjoint(preempted(d))
