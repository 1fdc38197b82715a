"""Gang placement, tenant isolation, power and GPU health (rules 8-11)."""

from __future__ import annotations

from neocloud.scheduler.policy.engine import jobs_on_unplaceable_gpus, schedule
from neocloud.scheduler.policy.types import INTERNAL_TENANT, Preemption
from tests.unit.policy.factories import (
    H100,
    H200,
    INTERNAL,
    ON_DEMAND,
    check_invariants,
    contract,
    fleet,
    gpu,
    job,
    node,
    placed,
    policy_input,
    preempted,
    running,
)

# --- rule 8: gangs


def test_a_gang_gets_whole_nodes_and_exactly_its_per_node_count() -> None:
    inp = policy_input(fleet(4), [job("g", 32, per_node=8)])
    d = schedule(inp)
    check_invariants(inp, d)
    got = placed(d)["g"]
    assert len(got) == 4 and all(len(gs) == 8 for gs in got.values())


def test_a_gang_is_all_or_nothing() -> None:
    run = [running("r", {"n0": 4})]
    inp = policy_input(fleet(2), [job("g", 16, per_node=8)], run)
    d = schedule(inp)
    assert d.placements == ()
    assert "2 needed" in d.pending["g"]


def test_per_node_count_may_be_smaller_than_a_node() -> None:
    inp = policy_input(fleet(2), [job("g", 8, per_node=4)], [running("r", {"n0": 4}), running("s", {"n1": 4})])
    d = schedule(inp)
    assert placed(d)["g"] == {
        "n0": tuple(gpu("n0", k) for k in range(4, 8)),
        "n1": tuple(gpu("n1", k) for k in range(4, 8)),
    }


def test_shapes_that_do_not_divide_are_refused() -> None:
    d = schedule(policy_input(fleet(2), [job("bad", 12, per_node=8), job("zero", 0, per_node=1)]))
    assert "invalid shape" in d.pending["bad"] and "invalid shape" in d.pending["zero"]


def test_an_8_per_node_job_prefers_a_whole_free_node() -> None:
    # n0 has 7 GPUs placeable (one unhealthy), n1 is partly used by the same tenant, n2 is whole.
    nodes = [node("n0", unhealthy=[3]), node("n1"), node("n2")]
    d = schedule(policy_input(nodes, [job("w", 8)], [running("r", {"n1": 1})]))
    assert list(placed(d)["w"]) == ["n2"]


def test_small_jobs_fill_the_tightest_node_first() -> None:
    """Best fit: the node whose free count is the smallest that fits."""
    run = [running("r1", {"n0": 5}), running("r2", {"n1": 2})]  # n0: 3 free, n1: 6 free, n2: 8 free
    d = schedule(policy_input(fleet(3), [job("a", 2), job("b", 3, submitted_at=1)], run))
    got = placed(d)
    assert set(got["a"]) == {"n0"}  # 3 free: the tightest that fits 2
    assert set(got["b"]) == {"n1"}  # then n0 has 1 left; 6 free beats breaking the whole n2


def test_gpu_model_is_honoured() -> None:
    nodes = fleet(1, model=H100, prefix="h") + fleet(1, model=H200)
    d = schedule(policy_input(nodes, [job("j", 8, model=H200), job("k", 8, model="NVIDIA B200")]))
    assert list(placed(d)["j"]) == ["n0"]
    assert d.pending["k"] == "no NVIDIA B200 GPUs in this fleet"


def test_a_gang_never_spans_two_models() -> None:
    nodes = fleet(1, model=H100, prefix="h") + fleet(1, model=H200)
    d = schedule(policy_input(nodes, [job("j", 16)]))
    assert d.placements == () and "j" in d.pending


def test_never_more_than_the_fleet_can_ever_hold() -> None:
    d = schedule(policy_input(fleet(2), [job("huge", 64)]))
    assert "no room in this fleet" in d.pending["huge"]


def test_no_gpu_is_given_twice_or_taken_from_running_work() -> None:
    run = [running("r", {"n0": [0, 2, 4, 6]})]
    inp = policy_input(fleet(1), [job("a", 2), job("b", 2, submitted_at=1)], run)
    d = schedule(inp)
    check_invariants(inp, d)
    got = placed(d)
    assert got["a"]["n0"] == (gpu("n0", 1), gpu("n0", 3))
    assert got["b"]["n0"] == (gpu("n0", 5), gpu("n0", 7))


# --- rule 9: isolation


def test_a_node_never_hosts_two_tenants() -> None:
    run = [running("r", {"n0": 2}, tenant="acme")]
    d = schedule(policy_input(fleet(1), [job("other", 2, tenant="globex")], run))
    assert d.placements == ()
    d2 = schedule(policy_input(fleet(1), [job("same", 2, tenant="acme")], run))
    assert list(placed(d2)["same"]) == ["n0"]


def test_a_tenant_never_sits_beside_internal_work_but_internal_teams_share() -> None:
    run = [running("r", {"n0": 2}, cls=INTERNAL, tenant="team-a")]
    queue = [job("t", 2, tenant="acme"), job("i", 2, cls=INTERNAL, tenant="team-b")]
    d = schedule(policy_input(fleet(1), queue, run))
    assert set(placed(d)) == {"i"}
    assert "t" in d.pending


def test_the_internal_tenant_name_counts_as_internal_whatever_the_class() -> None:
    run = [running("r", {"n0": 2}, cls=ON_DEMAND, tenant=INTERNAL_TENANT)]
    queue = [job("i", 2, cls=INTERNAL, tenant="team-b"), job("t", 2, cls=ON_DEMAND, tenant="acme")]
    d = schedule(policy_input(fleet(1), queue, run))
    assert set(placed(d)) == {"i"}


def test_isolation_off_packs_tenants_together() -> None:
    run = [running("r", {"n0": 2}, tenant="acme")]
    d = schedule(policy_input(fleet(1), [job("other", 2, tenant="globex")], run, one_tenant_per_node=False))
    assert list(placed(d)["other"]) == ["n0"]


def test_one_pass_does_not_put_two_tenants_on_one_fresh_node() -> None:
    inp = policy_input(fleet(1), [job("a", 2, tenant="a"), job("b", 2, tenant="b")])
    d = schedule(inp)
    check_invariants(inp, d)
    assert len(d.placements) == 1


# --- rule 10: power


def test_site_power_budget_counts_measured_draw_and_what_the_pass_starts() -> None:
    nodes = fleet(3, power_w=1000.0)  # 3 kW measured
    queue = [job("a", 8, power_w=500.0), job("b", 8, power_w=500.0, submitted_at=1)]
    inp = policy_input(nodes, queue, site_power_budget_w=10_000.0)
    d = schedule(inp)
    check_invariants(inp, d)
    assert list(placed(d)) == ["a"]  # 3 kW + 4 kW
    assert d.pending["b"] == "site power budget: starting it would draw 1.0 kW over the 10.0 kW budget"


def test_a_job_blocked_by_power_holds_the_remaining_power() -> None:
    """Later smaller jobs must not eat the power a blocked job waits for."""
    queue = [job("big", 16, power_w=700.0, tenant="a"), job("small", 1, power_w=700.0, tenant="b", submitted_at=1)]
    inp = policy_input(fleet(4, power_w=1000.0), queue, site_power_budget_w=12_000.0, usage={"b": 1e9})
    d = schedule(inp)
    assert d.placements == ()
    assert "site power budget" in d.pending["big"]
    assert "held for a job first in line" in d.pending["small"]


def test_a_power_contract_holds_its_jobs_to_its_envelope() -> None:
    c = contract("c-p", tenant="bigco", power_w=6000.0)
    run = [running("r", {"n0": 4}, cls=3, tenant="bigco", contract="c-p", power_w=700.0)]  # 2.8 kW
    queue = [job("fits", 4, cls=3, tenant="bigco", contract="c-p", power_w=700.0)]
    queue.append(job("over", 4, cls=3, tenant="bigco", contract="c-p", power_w=700.0, submitted_at=1))
    d = schedule(policy_input(fleet(3), queue, run, [c]))
    assert "fits" in placed(d)
    assert d.pending["over"] == "your contract c-p power envelope: starting it would draw 2.4 kW over its 6.0 kW"


def test_unused_power_of_a_power_contract_is_held_back_from_others() -> None:
    c = contract("c-p", tenant="bigco", power_w=5000.0)
    queue = [job("other", 8, cls=ON_DEMAND, tenant="acme", power_w=700.0)]
    d = schedule(policy_input(fleet(2), queue, (), [c], site_power_budget_w=10_000.0))
    assert d.pending["other"] == (
        "site power budget: starting it would draw 600 W over the 10.0 kW budget "
        "(5.0 kW of it held for reserved contracts)"
    )


# --- rule 11: health and cordons


def test_nothing_is_placed_on_cordoned_nodes_or_unplaceable_gpus() -> None:
    nodes = [node("n0", cordoned=True), node("n1", unhealthy=[0, 1])]
    inp = policy_input(nodes, [job("a", 8, submitted_at=1), job("b", 6)])
    d = schedule(inp)
    check_invariants(inp, d)
    assert "a" in d.pending
    assert placed(d)["b"] == {"n1": tuple(gpu("n1", k) for k in range(2, 8))}


def test_work_on_an_unhealthy_gpu_is_preempted_and_requeued() -> None:
    nodes = [node("n0", unhealthy=[1]), node("n1")]
    run = [
        running("hit", {"n0": [0, 1]}, requeues=0),
        running("spared", {"n0": [2, 3]}),
        running("worn", {"n1": [0]}, started_at=0.0),
        running("again", {"n0": [1]}, requeues=3),
        running("lost", {"gone-node": 8}),
        running("told", {"n0": [1, 4]}, notice_at=1.0),
    ]
    inp = policy_input(nodes, (), run, min_runtime_s=1e9)
    expected = [Preemption("hit", "GPU unhealthy"), Preemption("again", "GPU unhealthy", requeue=False)]
    expected.append(Preemption("lost", "GPU unhealthy"))
    assert jobs_on_unplaceable_gpus(inp) == expected
    d = schedule(inp)
    assert sorted(d.preemptions, key=lambda p: p.job_id) == sorted(expected, key=lambda p: p.job_id)


def test_a_cordoned_node_drains_its_work_is_not_preempted() -> None:
    d = schedule(policy_input([node("n0", cordoned=True)], (), [running("r", {"n0": 8})]))
    assert preempted(d) == []
