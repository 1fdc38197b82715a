"""The caches and shortcuts that keep one pass fast give the same answers as the plain rules."""

from __future__ import annotations

from dataclasses import fields

from neocloud.scheduler.policy.contracts import ContractBook
from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.fairshare import fair_order
from neocloud.scheduler.policy.fleet import FleetState
from neocloud.scheduler.policy.placement import Placer
from neocloud.scheduler.policy.types import Placement
from tests.unit.policy.factories import (
    INTERNAL,
    check_invariants,
    fleet,
    gpu,
    job,
    node,
    placed,
    policy_input,
    running,
)
from tests.unit.policy.test_fairshare import shares


def test_placements_built_slot_by_slot_equal_the_dataclass() -> None:
    # engine._Pass._consider fills Placement's slots directly: it must set every field there is.
    assert [f.name for f in fields(Placement)] == ["job_id", "placement", "on_lent_capacity"]
    inp = policy_input(fleet(4), [job("w", 8), job("g", 16, per_node=8, tenant="b"), job("s", 2, tenant="c")])
    d = schedule(inp)
    assert len(d.placements) == 3
    for p in d.placements:
        twin = Placement(p.job_id, p.placement, p.on_lent_capacity)
        assert p == twin and hash(p) == hash(twin) and repr(p) == repr(twin)


def test_fifo_within_a_tenant_breaks_equal_submission_times_by_job_id() -> None:
    jobs = [job(k, 1, tenant="a", submitted_at=t) for k, t in (("a3", 5), ("a1", 5), ("a2", 1), ("a0", 5))]
    order = [j.job_id for j in fair_order(jobs, shares(), lambda j: False)]
    assert order == ["a2", "a0", "a1", "a3"]


def test_isolation_owner_is_per_class_for_the_same_tenant() -> None:
    # Tenant t submits internal work (owner: internal) and spot work (owner: t); a cached route must not
    # carry the internal owner into the spot class.
    inp = policy_input(fleet(1), [job("i", 4, cls=INTERNAL, tenant="t"), job("s", 4, tenant="t")])
    d = schedule(inp)
    check_invariants(inp, d)
    assert set(placed(d)) == {"i"}
    assert "waiting for 4 GPUs" in d.pending["s"]


def test_pending_reasons_follow_capacity_that_changes_between_two_jobs_of_one_shape() -> None:
    # b1 is first in line and holds the three free nodes; c1 (same shape, asked next) sees none free.
    inp = policy_input(fleet(4), [job("b1", 32, tenant="b"), job("c1", 32, tenant="c")], [running("r", {"n3": 8})])
    d = schedule(inp)
    assert d.pending["b1"].startswith("waiting for 32 GPUs at 8 per node: 3 whole nodes free, 4 needed")
    assert d.pending["b1"].endswith("first in line, 3 nodes held for it")
    assert d.pending["c1"] == "waiting for 32 GPUs at 8 per node: 0 whole nodes free, 4 needed"


def test_a_gang_skips_nodes_held_for_another_job() -> None:
    # Held (claimed) nodes stay in the free stacks as stale entries: taking a gang must step over them.
    inp = policy_input([node(f"n{k}") for k in range(4)] + [node("p0")], (), [running("r", {"p0": 2})])
    fleet_state = FleetState(inp)
    placer = Placer(inp, fleet_state, ContractBook((), inp.now, {}, {}))
    pools = placer.general("NVIDIA H200", "x")
    placer.claim(0)  # n0, the first whole node a gang would take
    got = placer.place(pools, 8, 2, "x")
    assert got is not None
    entries, carved = got
    assert [nid for nid, _ in entries] == ["n1", "n2"] and not carved
    assert entries[0][1] == tuple(gpu("n1", k) for k in range(8))
    assert placer.ready(pools, 8) == 1  # n3 is left, n0 is held
    assert placer.ready(placer.general("NVIDIA H200", "acme"), 6) == 2  # and p0, acme's, has 6 free


def test_a_partly_used_node_gives_its_free_gpus_in_index_order() -> None:
    nodes = [node("n0", unhealthy=[5])]
    run = [running("r", {"n0": [0, 2]})]
    d = schedule(policy_input(nodes, [job("a", 2, tenant="acme"), job("b", 3, tenant="acme", submitted_at=1)], run))
    assert placed(d)["a"] == {"n0": (gpu("n0", 1), gpu("n0", 3))}
    assert placed(d)["b"] == {"n0": (gpu("n0", 4), gpu("n0", 6), gpu("n0", 7))}
