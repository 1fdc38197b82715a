"""Tenant work only on nodes that enforce the rank sandbox (NodeView.sandboxed);
a node that cannot is usable for internal work only."""

from __future__ import annotations

import dataclasses

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import NodeView
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


def test_tenant_work_skips_unsandboxed_nodes_and_internal_work_may_use_them() -> None:
    nodes = fleet(2)
    nodes[0] = dataclasses.replace(nodes[0], sandboxed=False)
    inp = policy_input(nodes, [job("spot", 8, cls=SPOT), job("od", 8, cls=ON_DEMAND, tenant="beta")])
    d = schedule(inp)
    check_invariants(inp, d)
    got = placed(d)
    assert set(got) == {"spot"} or set(got) == {"od"}  # one sandboxed node for two tenant jobs
    assert all(set(on) == {"n1"} for on in got.values())
    assert "od" in got  # on-demand outranks spot for it; n0 stays empty rather than hold tenant work

    inp = policy_input(nodes, [job("od", 8, cls=ON_DEMAND, tenant="beta"), job("int", 8, cls=INTERNAL)])
    d = schedule(inp)
    check_invariants(inp, d)
    assert placed(d) == {"int": {"n0": nodes[0].gpus}, "od": {"n1": nodes[1].gpus}}


def test_no_sandboxed_node_leaves_tenant_work_pending() -> None:
    nodes = [dataclasses.replace(n, sandboxed=False) for n in fleet(2)]
    d = schedule(policy_input(nodes, [job("od", 8, cls=ON_DEMAND)]))
    assert d.placements == () and "od" in d.pending


# --- preemption and rooms follow the same rule (fleet.may_run_on): room is made only where the job may run


def unsandbox(nodes: list[NodeView], *ids: str) -> list[NodeView]:
    return [dataclasses.replace(n, sandboxed=False) if n.node_id in ids else n for n in nodes]


def test_tenant_job_preempts_on_a_sandboxed_node_not_on_the_cheaper_unsandboxed_one() -> None:
    nodes = unsandbox(fleet(2), "n0")
    fresh = running("spot-n0", {"n0": 8}, checkpoint_at=NOW - 10.0)  # the cheapest victim, where od cannot run
    old = running("spot-n1", {"n1": 8}, tenant="beta")
    inp = policy_input(nodes, [job("od", 8, cls=ON_DEMAND, tenant="gamma")], [fresh, old])
    d = schedule(inp)
    check_invariants(inp, d)
    assert preempted(d) == ["spot-n1"]
    assert d.rooms == {"od": ("n1",)}


def test_tenant_job_does_not_preempt_work_on_an_unsandboxed_node() -> None:
    nodes = unsandbox(fleet(2), "n0")
    spot = running("spot", {"n0": 8})
    od = running("od-running", {"n1": 8}, cls=ON_DEMAND, tenant="beta")  # not preemptable by on-demand
    inp = policy_input(nodes, [job("od", 8, cls=ON_DEMAND, tenant="gamma")], [spot, od])
    d = schedule(inp)
    check_invariants(inp, d)
    assert d.preemptions == () and d.rooms == {} and d.placements == ()
    assert "nothing it may preempt would make room" in d.pending["od"]


def test_reserved_job_is_not_warned_about_work_on_an_unsandboxed_node() -> None:
    nodes = unsandbox(fleet(1), "n0")
    young = running("spot", {"n0": 8}, started_at=NOW - 5.0)  # relaxed plans see young work
    c = contract("c1", gpus=8)
    inp = policy_input(nodes, [job("r", 8, cls=RESERVED, tenant="bigco", contract="c1")], [young], [c])
    d = schedule(inp)
    check_invariants(inp, d)
    assert d.preemptions == () and d.warnings == () and d.rooms == {}


def test_internal_work_still_preempts_on_unsandboxed_and_sandboxed_nodes() -> None:
    nodes = unsandbox(fleet(2), "n0")
    on_n0 = running("spot-n0", {"n0": 8})
    on_n1 = running("spot-n1", {"n1": 8}, tenant="beta")
    inp = policy_input(nodes, [job("int", 16, cls=INTERNAL)], [on_n0, on_n1], internal_floor_gpus=16)
    d = schedule(inp)
    check_invariants(inp, d)
    assert sorted(preempted(d)) == ["spot-n0", "spot-n1"]
    assert sorted(d.rooms["int"]) == ["n0", "n1"]


def test_room_on_a_node_that_can_no_longer_sandbox_is_dropped() -> None:
    nodes = unsandbox(fleet(2), "n0")  # n0 was sandboxed when the room was made, lost it since
    spot = running("spot", {"n1": 8})
    inp = dataclasses.replace(
        policy_input(nodes, [job("od", 8, cls=ON_DEMAND, tenant="gamma")], [spot]), rooms={"od": ("n0",)}
    )
    d = schedule(inp)
    check_invariants(inp, d)
    assert "od" not in placed(d)  # never on n0, although its room there is free
    assert preempted(d) == ["spot"] and d.rooms == {"od": ("n1",)}  # the usual way: room made on n1


# --- the pending reason names the GPUs it waits behind


def test_pending_reason_names_free_gpus_on_unsandboxed_nodes() -> None:
    nodes = unsandbox(fleet(3), "n0", "n1")
    od = running("od-running", {"n2": 8}, cls=ON_DEMAND, tenant="beta")
    inp = policy_input(nodes, [job("od", 8, cls=ON_DEMAND, tenant="gamma")], [od])
    d = schedule(inp)
    check_invariants(inp, d)
    assert d.pending["od"].startswith(
        "waiting for 8 GPUs at 8 per node: 16 GPUs free on nodes that cannot sandbox tenant work; "
        "waiting for a sandboxed node"
    ), d.pending["od"]

    # Internal work takes them; a tenant job they would not fit anyway keeps the usual reason.
    d = schedule(policy_input(nodes, [job("int", 8, cls=INTERNAL)], [od]))
    assert placed(d) == {"int": {"n0": nodes[0].gpus}}
    d = schedule(policy_input(nodes, [job("big", 24, cls=SPOT, tenant="gamma")], [od]))
    assert "cannot sandbox" not in d.pending["big"] and "whole nodes free" in d.pending["big"]


def test_contract_capacity_is_set_aside_on_nodes_its_holder_may_use() -> None:
    nodes = unsandbox(fleet(2), "n0")
    c = contract("c1", gpus=8)  # bigco's 8 unused GPUs must be kept on n1, the node bigco may run on
    inp = policy_input(nodes, [job("od", 8, cls=ON_DEMAND, tenant="gamma")], contracts=[c])
    d = schedule(inp)
    check_invariants(inp, d)
    assert d.placements == () and "held for" in d.pending["od"], d.pending
    inp = policy_input(nodes, [job("r", 8, cls=RESERVED, tenant="bigco", contract="c1")], contracts=[c])
    assert placed(schedule(inp)) == {"r": {"n1": nodes[1].gpus}}
