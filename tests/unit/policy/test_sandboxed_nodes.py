"""Tenant work only on nodes that enforce the rank sandbox (NodeView.sandboxed);
a node that cannot is usable for internal work only."""

from __future__ import annotations

import dataclasses

from neocloud.scheduler.policy.engine import schedule
from tests.unit.policy.factories import INTERNAL, ON_DEMAND, SPOT, check_invariants, fleet, job, placed, policy_input


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
