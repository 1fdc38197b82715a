"""Backfill without runtime estimates (rule 7) and why-pending texts (rule 15).

Backfill rule: the first job per GPU model that does not fit holds the nodes
closest to fitting it (every node with a slice free, then the fullest others)
for the rest of the pass; later jobs may start anywhere else. Later blocked
jobs hold nothing (one hold per model, as in EASY backfilling).
"""

from __future__ import annotations

from neocloud.scheduler.policy import explain
from neocloud.scheduler.policy.engine import schedule
from tests.unit.policy.factories import (
    H100,
    H200,
    ON_DEMAND,
    check_invariants,
    fleet,
    job,
    node,
    placed,
    policy_input,
    running,
)


def test_a_later_small_job_backfills_where_the_blocked_one_cannot_go() -> None:
    nodes = fleet(2)
    run = [running("rb", {"n1": 4}, tenant="b")]
    queue = [
        job("big", 16, tenant="a", submitted_at=0),
        job("small-b", 4, tenant="b", submitted_at=1),  # fits on b's own node: big could never use it
        job("small-c", 8, tenant="c", submitted_at=2),  # would take the whole node big waits for
    ]
    inp = policy_input(nodes, queue, run, usage={"b": 1e6, "c": 2e6})
    d = schedule(inp)
    check_invariants(inp, d)
    assert set(placed(d)) == {"small-b"}
    assert d.pending["big"] == (
        "waiting for 16 GPUs at 8 per node: 1 whole node free, 2 needed; first in line, 1 node held for it"
    )
    assert "waiting for 8 GPUs at 8 per node: 0 whole nodes free" in d.pending["small-c"]


def test_another_model_is_not_held() -> None:
    nodes = fleet(1, model=H200) + fleet(1, model=H100, prefix="h")
    queue = [job("big", 16, model=H200, tenant="a"), job("other", 8, model=H100, tenant="b", submitted_at=1)]
    d = schedule(policy_input(nodes, queue, usage={"b": 1e6}))
    assert list(placed(d)) == ["other"]


def test_only_the_first_blocked_job_holds_nodes() -> None:
    run = [running("r", {"n1": 4}, tenant="a"), running("r2", {"n2": 6}, tenant="x")]
    queue = [
        job("big", 24, tenant="a", submitted_at=0),  # holds n0 (free) and n1 (a's, 4 free)
        job("big2", 16, tenant="b", submitted_at=1),  # blocked too, holds nothing
        job("tiny", 2, tenant="x", submitted_at=2),  # x's own node n2 is not held
    ]
    d = schedule(policy_input(fleet(3), queue, run, usage={"b": 1e8, "x": 2e8}))
    assert list(placed(d)) == ["tiny"]
    assert "first in line, 2 nodes held for it" in d.pending["big"]
    assert "first in line" not in d.pending["big2"]


def test_fair_share_reason_counts_the_jobs_that_went_first() -> None:
    queue = [job(f"b{k}", 8, tenant=f"t{k}", submitted_at=10 + k) for k in range(3)]
    queue.append(job("a", 8, tenant="a", submitted_at=0))
    d = schedule(policy_input(fleet(3), queue, usage={"a": 5e6}))
    assert "a" not in placed(d)
    assert d.pending["a"].startswith("tenant fair share: 3 jobs of tenants with less usage went first; waiting for")


def test_reasons_for_model_and_whole_nodes() -> None:
    nodes = [node("n0"), node("n1")]
    run = [running("r", {"n0": 2}, tenant="a"), running("r2", {"n1": 8}, tenant="x")]
    d = schedule(policy_input(nodes, [job("j", 16, model=H200, tenant="a")], run))
    assert d.pending["j"] == (
        "waiting for 16 GPUs of NVIDIA H200 at 8 per node: 0 whole nodes free, 2 needed; "
        "first in line, 1 node held for it"
    )
    d2 = schedule(policy_input(nodes, [job("k", 8, per_node=4, tenant="a")], run))
    assert placed(d2) == {}  # a's node n0 has room for one slice only; n1 is x's
    assert d2.pending["k"].startswith("waiting for 8 GPUs at 4 per node: 1 node with 4 free GPUs, 2 needed")


def test_every_waiting_job_has_a_reason() -> None:
    run = [running("od", {"n0": 8}, cls=ON_DEMAND, tenant="x")]
    queue = [job(f"j{k}", 8 * (k % 3 + 1), tenant=f"t{k % 4}", submitted_at=k) for k in range(12)]
    inp = policy_input(fleet(3), queue, run, site_power_budget_w=30_000.0)
    d = schedule(inp)
    check_invariants(inp, d)
    assert all(isinstance(v, str) and v for v in d.pending.values())


def test_text_helpers() -> None:
    assert explain.watts(700) == "700 W"
    assert explain.watts(5600) == "5.6 kW"
    assert explain.watts(1.2e6) == "1.2 MW"
    assert explain.site_power(5600, 1.2e6) == "site power budget: starting it would draw 5.6 kW over the 1.2 MW budget"
    assert explain.when(1_796_083_200.0) == "2026-12-01 00:00 UTC"
    assert (
        explain.capacity(16, H200, 8, 1, True)
        == "waiting for 16 GPUs of NVIDIA H200 at 8 per node: 1 whole node free, 2 needed"
    )
