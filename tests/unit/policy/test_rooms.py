"""A preemption buys something: the job it was for is placed on the GPUs it freed (issue 12 item 5).

Each scenario runs the passes a real preemption spans: the pass that preempts, passes while
the victims are under notice, and the pass after they released their GPUs, with the
Decision's rooms handed back as the controller does."""

from __future__ import annotations

from dataclasses import replace

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Decision, PolicyInput, RunningJob
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


def run(inp: PolicyInput, rooms: dict[str, tuple[str, ...]] | None = None) -> Decision:
    inp = replace(inp, rooms=dict(rooms or {}))
    d = schedule(inp)
    check_invariants(inp, d)
    return d


def noticed(j: RunningJob) -> RunningJob:
    return replace(j, preemption_notice_at=NOW)


def test_a_one_gpu_job_is_placed_on_the_node_its_preemption_freed() -> None:
    # n0: a 4-GPU spot job of acme (4 GPUs free but acme's, under isolation); n1: bigco's 8-GPU on-demand job.
    spot = running("spot4", {"n0": 4}, cls=SPOT, tenant="acme")
    busy = running("busy", {"n1": 8}, cls=ON_DEMAND, tenant="bigco")
    od = job("od1", 1, cls=ON_DEMAND, tenant="beta")
    first = run(policy_input(fleet(2), [od], [spot, busy]))
    assert preempted(first) == ["spot4"] and first.rooms == {"od1": ("n0",)}
    # Under notice: bigco's job ends meanwhile and n1 is all free. The 1-GPU job waits for the
    # room its preemption is making rather than start elsewhere and leave the preemption to no one.
    second = run(policy_input(fleet(2), [od], [noticed(spot)]), first.rooms)
    assert placed(second) == {} and preempted(second) == []
    assert second.pending["od1"] == "waiting for preempted work to release its GPUs (4 GPUs under notice)"
    assert second.rooms == first.rooms
    # Released: both nodes are free; it starts on n0, the node it freed.
    third = run(policy_input(fleet(2), [od]), second.rooms)
    assert list(placed(third)["od1"]) == ["n0"] and third.rooms == {}


def test_a_room_is_held_against_every_other_job() -> None:
    spot = running("spot4", {"n0": 4}, cls=SPOT, tenant="acme")
    od = job("od1", 1, cls=ON_DEMAND, tenant="beta", submitted_at=5)
    first = run(policy_input(fleet(1), [od], [spot]))
    assert preempted(first) == ["spot4"]
    # The victim left; an internal job (a higher class) and an on-demand job queued earlier arrive.
    others = [job("i", 8, cls=INTERNAL), job("early", 8, cls=ON_DEMAND, tenant="gamma", submitted_at=0)]
    later = run(policy_input(fleet(1), [od, *others]), first.rooms)
    assert list(placed(later)) == ["od1"]
    assert preempted(later) == []


def test_a_job_whose_room_is_still_leaving_gets_no_second_victim() -> None:
    spot = running("spot4", {"n0": 4}, cls=SPOT, tenant="acme")
    od = job("od1", 1, cls=ON_DEMAND, tenant="beta")
    first = run(policy_input(fleet(1), [od], [spot]))
    # Under notice, and another spot job now sits on a second node: nothing more is preempted for od1.
    more = running("spot8", {"n1": 8}, cls=SPOT, tenant="delta")
    hog = job("hog", 8, cls=INTERNAL)  # first in line: on main it held n0's free GPUs and od1 planned again
    second = run(policy_input(fleet(2), [hog, od], [noticed(spot), more], internal_floor_gpus=0), first.rooms)
    assert "spot4" not in preempted(second)
    assert [p.job_id for p in second.preemptions if p.for_job_id == "od1"] == []
    assert second.rooms["od1"] == ("n0",)


def test_a_gang_is_placed_on_exactly_the_nodes_its_preemption_freed() -> None:
    victims = [running("s0", {"n0": 8}, tenant="acme"), running("s1", {"n1": 8}, tenant="acme")]
    gang = job("gang", 16, per_node=8, cls=ON_DEMAND, tenant="beta")
    first = run(policy_input(fleet(2), [gang], victims))
    assert sorted(preempted(first)) == ["s0", "s1"] and sorted(first.rooms["gang"]) == ["n0", "n1"]
    # s0 has released n0, s1 is still leaving n1; two more nodes join, free. A spot job of 8 GPUs
    # may take a new node, never n0; the gang waits for its own two nodes.
    nodes = fleet(4)
    filler = job("filler", 8, cls=SPOT, tenant="acme")
    second = run(policy_input(nodes, [gang, filler], [noticed(victims[1])]), first.rooms)
    assert "gang" not in placed(second) and list(placed(second)["filler"]) not in (["n0"], ["n1"])
    assert second.pending["gang"] == "waiting for preempted work to release its GPUs (8 GPUs under notice)"
    third = run(
        policy_input(nodes, [gang], [running("filler", dict.fromkeys(placed(second)["filler"], 8))]), second.rooms
    )
    assert sorted(placed(third)["gang"]) == ["n0", "n1"]


def test_a_reserved_job_reclaiming_lent_capacity_lands_on_it() -> None:
    c = contract("c-1", tenant="bigco", gpus=8)
    lent = running("lent", {"n0": 8}, cls=SPOT, tenant="acme", lent=True)
    other = running("other", {"n1": 4}, cls=SPOT, tenant="acme")
    r = job("r", 8, cls=RESERVED, tenant="bigco", contract="c-1")
    first = run(policy_input(fleet(2), [r], [lent, other], [c]))
    assert preempted(first) == ["lent"] and first.rooms == {"r": ("n0",)}
    # Released; meanwhile n1 emptied too. The reserved job takes n0, the capacity it reclaimed.
    second = run(policy_input(fleet(2), [r], [], [c]), first.rooms)
    assert list(placed(second)["r"]) == ["n0"]


def test_a_job_that_fits_on_free_gpus_elsewhere_preempts_nothing() -> None:
    spot = running("spot4", {"n0": 4}, cls=SPOT, tenant="acme")
    mine = running("mine", {"n1": 4}, cls=ON_DEMAND, tenant="beta")
    od = job("od1", 1, cls=ON_DEMAND, tenant="beta")
    d = run(policy_input(fleet(2), [od], [spot, mine]))
    assert preempted(d) == [] and list(placed(d)["od1"]) == ["n1"] and d.rooms == {}


def test_a_room_that_can_no_longer_serve_is_dropped() -> None:
    od = job("od1", 8, cls=ON_DEMAND, tenant="beta")
    nodes = fleet(2)
    nodes[0] = replace(nodes[0], cordoned=True)  # the operator drained the room meanwhile
    d = run(policy_input(nodes, [od]), {"od1": ("n0",)})
    assert list(placed(d)["od1"]) == ["n1"] and d.rooms == {}
    gone = run(policy_input(fleet(1, prefix="m"), [od]), {"od1": ("n0",)})  # the node left the fleet
    assert list(placed(gone)["od1"]) == ["m0"] and gone.rooms == {}
