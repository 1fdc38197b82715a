"""Weighted fair share: half-life decay, dominant share, and the order a class is served in (rules 7, 14)."""

from __future__ import annotations

import math

import pytest

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.fairshare import Shares, accrue, decay, fair_order
from tests.unit.policy.factories import NOW, ON_DEMAND, fleet, job, placed, policy_input, running

DAY = 86_400.0


def shares(usage: dict[str, float] | None = None, gpus: dict[str, int] | None = None, **kw: object) -> Shares:
    args: dict[str, object] = {
        "usage_gpu_s": usage or {},
        "gpus_running": gpus or {},
        "power_running_w": {},
        "fleet_gpus": 100,
        "site_power_budget_w": math.inf,
        "half_life_s": DAY,
        "weights": {},
    }
    args.update(kw)
    return Shares(**args)  # type: ignore[arg-type,unused-ignore]


def test_decay_halves_usage_every_half_life() -> None:
    assert decay(1000.0, DAY, DAY) == pytest.approx(500.0)
    assert decay(1000.0, 3 * DAY, DAY) == pytest.approx(125.0)
    assert decay(1000.0, 0.0, DAY) == 1000.0
    assert decay(1000.0, -5.0, DAY) == 1000.0  # clock skew never inflates usage
    assert decay(1000.0, 10.0, 0.0) == 0.0  # no memory


def test_accrue_converges_to_gpus_times_half_life_over_ln2() -> None:
    u = 0.0
    for _ in range(2000):
        u = accrue(u, 3600.0, 8, DAY)
    assert u == pytest.approx(8 * DAY / math.log(2), rel=1e-3)
    # Accruing in one step or in two is the same thing.
    assert accrue(accrue(100.0, 50.0, 4, DAY), 70.0, 4, DAY) == pytest.approx(accrue(100.0, 120.0, 4, DAY))


def test_share_adds_past_and_present_and_divides_by_weight() -> None:
    s = shares(usage={"a": DAY / math.log(2) * 10}, gpus={"a": 10, "b": 10}, weights={"b": 2.0})
    assert s.share("a") == pytest.approx(0.2)  # 10 % lately + 10 % now
    assert s.share("b") == pytest.approx(0.05)  # 10 % now, weight 2
    assert s.share("nobody") == 0.0
    s.charge("nobody", 50, 0.0)
    assert s.share("nobody") == pytest.approx(0.5)


def test_share_is_dominant_over_gpus_and_site_power() -> None:
    s = Shares({}, {"a": 10}, {"a": 9000.0}, 100, 10_000.0, DAY, {})
    assert s.share("a") == pytest.approx(0.9)  # power dominates: 90 % of the site budget


def test_order_interleaves_tenants_by_share_and_keeps_fifo_within_a_tenant() -> None:
    jobs = [job(f"a{k}", 1, tenant="a", submitted_at=k) for k in range(3)]
    jobs += [job(f"b{k}", 1, tenant="b", submitted_at=10 + k) for k in range(3)]
    order = [j.job_id for j in fair_order(jobs, shares(gpus={"a": 1}), lambda j: True)]
    assert order == ["b0", "a0", "b1", "a1", "b2", "a2"]


def test_a_job_that_is_not_placed_does_not_change_the_order() -> None:
    jobs = [job("a0", 1, tenant="a", submitted_at=0), job("a1", 1, tenant="a", submitted_at=1)]
    jobs += [job("b0", 1, tenant="b", submitted_at=0)]
    # a0 cannot be placed: tenant a keeps its (lowest) share, so a1 comes next.
    order = [j.job_id for j in fair_order(jobs, shares(gpus={"b": 5}), lambda j: j.job_id != "a0")]
    assert order == ["a0", "a1", "b0"]


def test_weights_favour_heavier_tenants() -> None:
    jobs = [job(f"a{k}", 1, tenant="a", submitted_at=k) for k in range(4)]
    jobs += [job(f"b{k}", 1, tenant="b", submitted_at=k) for k in range(4)]
    order = [j.job_id for j in fair_order(jobs, shares(weights={"b": 3.0}), lambda j: True)]
    # b's share grows a third as fast: about three placements per one of a's.
    assert order[:2] == ["a0", "b0"]
    assert order.index("b2") < order.index("a1") < order.index("a2")
    assert sum(j.startswith("b") for j in order[:6]) >= 4


def test_flooding_the_queue_first_does_not_win() -> None:
    """Rule 14: tenant a queued 20 jobs early and used the fleet a lot lately; b, quieter, goes first."""
    nodes = fleet(2)
    queue = [job(f"a{k}", 8, cls=ON_DEMAND, tenant="a", submitted_at=k) for k in range(20)]
    queue.append(job("b0", 8, cls=ON_DEMAND, tenant="b", submitted_at=1000))
    inp = policy_input(nodes, queue, usage={"a": 5e5, "b": 1e4})
    got = placed(schedule(inp))
    assert "b0" in got and "a0" in got and len(got) == 2


def test_past_usage_fades_with_the_half_life() -> None:
    """The same past usage decays: a week-old burst weighs less than yesterday's."""
    old, recent = decay(1e6, 7 * DAY, DAY), decay(1e6, DAY, DAY)
    nodes = fleet(1)
    queue = [job("old", 8, tenant="old", submitted_at=5), job("recent", 8, tenant="recent", submitted_at=0)]
    got = placed(schedule(policy_input(nodes, queue, usage={"old": old, "recent": recent})))
    assert list(got) == ["old"]


def test_running_gpus_count_in_the_share() -> None:
    nodes = fleet(3)
    run = [running("r", {"n0": 8}, tenant="busy")]
    queue = [job("busy1", 8, tenant="busy", submitted_at=0), job("idle1", 8, tenant="idle", submitted_at=10)]
    queue.append(job("idle2", 8, tenant="idle", submitted_at=11))
    got = placed(schedule(policy_input(nodes, queue, run)))
    # idle (share 0) goes first, then busy and idle tie at 8 GPUs: the name breaks the tie.
    assert set(got) == {"idle1", "busy1"}
    assert NOW > 0
