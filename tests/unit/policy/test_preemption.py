"""Capacity classes and who may preempt whom (rules 1, 2, 5, 6, 12)."""

from __future__ import annotations

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Preemption
from tests.unit.policy.factories import (
    INTERNAL,
    NOW,
    ON_DEMAND,
    RESERVED,
    SPOT,
    check_invariants,
    contract,
    fleet,
    job,
    placed,
    policy_input,
    preempted,
    running,
)

# --- rule 1: class order


def test_higher_classes_are_considered_first() -> None:
    queue = [
        job("s", 8, cls=SPOT, submitted_at=0),
        job("o", 8, cls=ON_DEMAND, submitted_at=1),
        job("i", 8, cls=INTERNAL, submitted_at=2),
    ]
    d = schedule(policy_input(fleet(1), queue))
    assert list(placed(d)) == ["i"]
    d2 = schedule(policy_input(fleet(2), queue))
    assert set(placed(d2)) == {"i", "o"}


# --- rule 2: the internal floor


def test_internal_below_its_floor_preempts_spot_before_on_demand() -> None:
    run = [running("od", {"n0": 8}, cls=ON_DEMAND), running("sp", {"n1": 8}, cls=SPOT)]
    inp = policy_input(fleet(2), [job("i", 8, cls=INTERNAL)], run, internal_floor_gpus=16)
    d = schedule(inp)
    check_invariants(inp, d)
    assert d.preemptions == (Preemption("sp", "internal work reclaims its floor", for_job_id="i"),)
    assert d.placements == ()  # the GPUs are free only once the executor releases them
    assert d.pending["i"] == "preempting 1 spot job to make room (notice sent)"


def test_internal_below_its_floor_preempts_on_demand_when_no_spot_is_left() -> None:
    run = [
        running("od", {"n0": 8}, cls=ON_DEMAND),
        running("res", {"n1": 8}, cls=RESERVED, tenant="bigco", contract="c"),
    ]
    inp = policy_input(fleet(2), [job("i", 8, cls=INTERNAL)], run, [contract("c", gpus=8)], internal_floor_gpus=8)
    d = schedule(inp)
    assert preempted(d) == ["od"]  # never the reserved job inside its contract
    assert d.preemptions[0].reason == "internal work reclaims its floor"


def test_internal_reclaims_only_up_to_its_floor() -> None:
    run = [running("mine", {"n0": 8}, cls=INTERNAL), running("od", {"n1": 8}, cls=ON_DEMAND)]
    inp = policy_input(fleet(2), [job("i", 8, cls=INTERNAL)], run, internal_floor_gpus=8)
    d = schedule(inp)
    assert d.preemptions == ()  # internal already holds its floor: on-demand is safe
    assert "nothing it may preempt" in d.pending["i"]


def test_internal_above_its_floor_may_preempt_spot_but_not_on_demand_or_reserved() -> None:
    run = [running("od", {"n0": 8}, cls=ON_DEMAND), running("sp", {"n1": 8}, cls=SPOT)]
    d = schedule(policy_input(fleet(2), [job("i", 16, cls=INTERNAL)], run))
    assert d.preemptions == ()  # 16 GPUs would need the on-demand node too: nothing is preempted
    d2 = schedule(policy_input(fleet(2), [job("i", 8, cls=INTERNAL)], run))
    assert d2.preemptions == (Preemption("sp", "internal work needs spot capacity", for_job_id="i"),)


def test_reserved_work_inside_its_contract_is_never_preempted() -> None:
    run = [running("res", {"n0": 8}, cls=RESERVED, tenant="bigco", contract="c")]
    queue = [job("i", 8, cls=INTERNAL), job("o", 8, cls=ON_DEMAND, submitted_at=1)]
    d = schedule(policy_input(fleet(1), queue, run, [contract("c", gpus=8)], internal_floor_gpus=100))
    assert d.preemptions == ()


# --- rules 5 and 6


def test_on_demand_is_preempted_by_nothing_but_the_internal_floor() -> None:
    run = [running("od", {"n0": 8}, cls=ON_DEMAND, tenant="x")]
    queue = [
        job("i", 8, cls=INTERNAL),
        job("r", 8, cls=RESERVED, tenant="bigco", contract="c"),
        job("o", 8, cls=ON_DEMAND, tenant="y"),
        job("s", 8, cls=SPOT, tenant="z"),
    ]
    d = schedule(policy_input(fleet(1), queue, run, [contract("c", gpus=8)]))
    assert d.preemptions == ()


def test_spot_is_preempted_by_any_higher_class() -> None:
    for cls, who in ((ON_DEMAND, "o"), (INTERNAL, "i")):
        run = [running("sp", {"n0": 8}, cls=SPOT, tenant="x")]
        d = schedule(policy_input(fleet(1), [job(who, 8, cls=cls, tenant="y")], run))
        assert preempted(d) == ["sp"] and d.preemptions[0].for_job_id == who
    run = [running("sp", {"n0": 8}, cls=SPOT, tenant="x")]
    d = schedule(policy_input(fleet(1), [job("s", 8, cls=SPOT, tenant="y")], run))
    assert d.preemptions == ()  # spot never preempts spot


# --- rule 12: victims


def test_victims_lose_the_least_work() -> None:
    run = [
        running("fresh-ckpt", {"n0": 8}, started_at=NOW - 7200, checkpoint_at=NOW - 60),
        running("young", {"n1": 8}, started_at=NOW - 600),
        running("no-ckpt", {"n2": 8}, started_at=NOW - 3600),
    ]
    d = schedule(policy_input(fleet(3), [job("o", 8, cls=ON_DEMAND, tenant="y")], run))
    assert preempted(d) == ["fresh-ckpt"]


def test_lowest_class_goes_first_even_if_it_lost_more() -> None:
    run = [
        running("od", {"n0": 8}, cls=ON_DEMAND, started_at=NOW - 100),
        running("sp", {"n1": 8}, cls=SPOT, started_at=NOW - 90_000),
    ]
    d = schedule(policy_input(fleet(2), [job("i", 8, cls=INTERNAL)], run, internal_floor_gpus=8))
    assert preempted(d) == ["sp"]


def test_never_more_victims_than_needed() -> None:
    # n0 holds four 2-GPU spot jobs; 4 GPUs are needed and 2 are free already.
    run = [running(f"s{k}", {"n0": [2 * k, 2 * k + 1]}, started_at=NOW - 1000 * (k + 1)) for k in range(3)]
    d = schedule(policy_input(fleet(1), [job("o", 4, cls=ON_DEMAND, tenant="acme")], run))
    assert preempted(d) == ["s0"]  # the one that lost least; one is enough


def test_a_victim_spanning_nodes_is_counted_once() -> None:
    run = [running("wide", {"n0": 8, "n1": 8}), running("a", {"n2": 8}, started_at=NOW - 10), running("b", {"n3": 8})]
    inp = policy_input(fleet(4), [job("o", 16, cls=ON_DEMAND, tenant="y")], run, min_runtime_s=0)
    d = schedule(inp)
    assert preempted(d) == ["wide"]  # one victim frees both nodes


def test_jobs_younger_than_min_runtime_are_not_preempted() -> None:
    run = [running("young", {"n0": 8}, started_at=NOW - 30)]
    d = schedule(policy_input(fleet(1), [job("o", 8, cls=ON_DEMAND, tenant="y")], run, min_runtime_s=60))
    assert d.preemptions == ()
    d2 = schedule(policy_input(fleet(1), [job("o", 8, cls=ON_DEMAND, tenant="y")], run, min_runtime_s=10))
    assert preempted(d2) == ["young"]


def test_work_under_notice_frees_its_gpus_and_is_not_preempted_again() -> None:
    run = [running("leaving", {"n0": 8}, notice_at=NOW - 5), running("other", {"n1": 8})]
    d = schedule(policy_input(fleet(2), [job("o", 8, cls=ON_DEMAND, tenant="y")], run))
    assert d.preemptions == ()
    assert d.placements == ()
    assert d.pending["o"] == "waiting for preempted work to release its GPUs (8 GPUs under notice)"


def test_the_next_pass_does_not_preempt_more_for_the_same_job() -> None:
    run = [running("sp", {"n0": 8}), running("sp2", {"n1": 8})]
    queue = [job("o", 8, cls=ON_DEMAND, tenant="y")]
    first = schedule(policy_input(fleet(2), queue, run))
    assert preempted(first) == ["sp"]
    run2 = [running("sp", {"n0": 8}, notice_at=NOW), running("sp2", {"n1": 8})]
    second = schedule(policy_input(fleet(2), queue, run2))
    assert second.preemptions == ()
    third = schedule(policy_input(fleet(2), queue, [running("sp2", {"n1": 8})]))
    assert list(placed(third)["o"]) == ["n0"]


def test_two_waiting_jobs_do_not_count_the_same_victim() -> None:
    run = [running("sp", {"n0": 8}), running("sp2", {"n1": 8}, started_at=NOW - 7200)]
    queue = [job("o1", 8, cls=ON_DEMAND, tenant="y"), job("o2", 8, cls=ON_DEMAND, tenant="y", submitted_at=1)]
    d = schedule(policy_input(fleet(2), queue, run))
    assert sorted(preempted(d)) == ["sp", "sp2"]
    assert [p.for_job_id for p in d.preemptions] == ["o1", "o2"]


def test_requeue_stops_after_max_requeues() -> None:
    run = [running("tired", {"n0": 8}, requeues=3)]
    d = schedule(policy_input(fleet(1), [job("o", 8, cls=ON_DEMAND, tenant="y")], run, max_requeues=3))
    assert d.preemptions[0].requeue is False
    run = [running("fine", {"n0": 8}, requeues=2)]
    d = schedule(policy_input(fleet(1), [job("o", 8, cls=ON_DEMAND, tenant="y")], run, max_requeues=3))
    assert d.preemptions[0].requeue is True


def test_isolation_means_all_foreign_work_on_a_node_goes_or_none() -> None:
    # n0: a 2-GPU spot job and a 2-GPU on-demand job of tenant x; on-demand of y cannot share with x.
    run = [running("sp", {"n0": [0, 1]}, tenant="x"), running("od", {"n0": [2, 3]}, cls=ON_DEMAND, tenant="x")]
    d = schedule(policy_input(fleet(1), [job("o", 2, cls=ON_DEMAND, tenant="y")], run))
    assert d.preemptions == ()  # evicting the spot job alone would leave y beside x
    d2 = schedule(policy_input(fleet(1), [job("o", 2, cls=ON_DEMAND, tenant="x")], run))
    assert list(placed(d2)) == ["o"]  # x's own node has room already
