"""Reserved contracts and lending their unused capacity (rules 2, 3, 4)."""

from __future__ import annotations

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Preemption
from tests.unit.policy.factories import (
    H100,
    H200,
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


def rjob(job_id: str, gpus: int = 8, cid: str = "c-1", **kw: object) -> object:
    return job(job_id, gpus, cls=RESERVED, tenant="bigco", contract=cid, **kw)  # type: ignore[arg-type]


# --- admission


def test_a_contract_not_yet_active_or_over_admits_nothing() -> None:
    future = contract("c-1", gpus=8, start=1_796_083_200.0, end=1_800_000_000.0)  # 2026-12-01 00:00 UTC
    past = contract("c-2", gpus=8, start=NOW - 7200, end=NOW - 3600)
    d = schedule(policy_input(fleet(2), [rjob("a"), rjob("b", cid="c-2")], (), [future, past], now=NOW))
    assert d.placements == ()
    assert d.pending["a"] == "your contract c-1 is not active until 2026-12-01 00:00 UTC"
    assert d.pending["b"].startswith("your contract c-2 ended at ")


def test_jobs_beyond_the_contract_size_are_not_admitted_as_reserved() -> None:
    c = contract("c-1", gpus=16)
    run = [running("r", {"n0": 8}, cls=RESERVED, tenant="bigco", contract="c-1")]
    d = schedule(policy_input(fleet(4), [rjob("fits"), rjob("over", submitted_at=1)], run, [c]))
    assert list(placed(d)) == ["fits"]
    assert d.pending["over"] == (
        "not admitted as reserved: your contract c-1 is fully used (16 of 16 GPUs running or starting; "
        "this job needs 8 more)"
    )


def test_contract_checks_tenant_model_and_id() -> None:
    c = contract("c-1", gpus=16, model=H200)
    queue = [
        job("thief", 8, cls=RESERVED, tenant="acme", contract="c-1"),
        rjob("wrong-model", model=H100),
        rjob("nope", cid="c-404"),
        job("none", 8, cls=RESERVED, tenant="bigco"),
    ]
    d = schedule(policy_input(fleet(2, model=H200) + fleet(2, model=H100, prefix="h"), queue, (), [c]))
    assert d.pending["thief"] == "contract c-1 belongs to another tenant"
    assert d.pending["wrong-model"] == "your contract c-1 covers NVIDIA H200 GPUs, not NVIDIA H100"
    assert d.pending["nope"] == "your contract c-404 is unknown"
    assert d.pending["none"] == "reserved jobs need a contract: none given"


def test_a_contract_model_steers_its_jobs() -> None:
    c = contract("c-1", gpus=8, model=H200)
    d = schedule(policy_input(fleet(1, model=H100, prefix="h") + fleet(1, model=H200), [rjob("r")], (), [c]))
    assert list(placed(d)["r"]) == ["n0"]


def test_reserved_work_is_stopped_when_its_contract_ends() -> None:
    c = contract("c-1", gpus=8, start=NOW - 7200, end=NOW - 1)
    run = [running("r", {"n0": 8}, cls=RESERVED, tenant="bigco", contract="c-1", started_at=NOW - 10)]
    d = schedule(policy_input(fleet(1), (), run, [c]))
    assert d.preemptions == (Preemption("r", "contract c-1 ended", requeue=False),)


# --- guaranteed capacity: preemption


def test_reserved_job_preempts_spot_to_get_its_capacity() -> None:
    c = contract("c-1", gpus=8)
    run = [running("sp", {"n0": 8}, tenant="acme", lent=True), running("od", {"n1": 8}, cls=ON_DEMAND)]
    inp = policy_input(fleet(2), [rjob("r")], run, [c])
    d = schedule(inp)
    check_invariants(inp, d)
    assert d.preemptions == (Preemption("sp", "reserved contract c-1 reclaims its lent capacity", for_job_id="r"),)
    assert d.pending["r"] == "preempting 1 spot job to make room (notice sent)"


def test_reserved_job_prefers_spot_on_lent_capacity() -> None:
    c = contract("c-1", gpus=8)
    run = [
        running("sp-own", {"n0": 8}, tenant="acme", started_at=NOW - 100),
        running("sp-lent", {"n1": 8}, tenant="acme", lent=True, started_at=NOW - 9000),
    ]
    d = schedule(policy_input(fleet(2), [rjob("r")], run, [c]))
    assert preempted(d) == ["sp-lent"]


def test_reserved_job_preempts_internal_above_its_floor_but_not_below() -> None:
    c = contract("c-1", gpus=8)
    run = [running("i1", {"n0": 8}, cls=INTERNAL), running("i2", {"n1": 8}, cls=INTERNAL, started_at=NOW - 100)]
    d = schedule(policy_input(fleet(2), [rjob("r")], run, [c], internal_floor_gpus=8))
    assert d.preemptions == (Preemption("i2", "reserved contract c-1 reclaims its capacity", for_job_id="r"),)
    d2 = schedule(policy_input(fleet(2), [rjob("r")], run, [c], internal_floor_gpus=16))
    assert d2.preemptions == ()


def test_reserved_job_takes_spot_before_internal() -> None:
    c = contract("c-1", gpus=8)
    run = [running("i", {"n0": 8}, cls=INTERNAL, started_at=NOW - 61), running("sp", {"n1": 8}, tenant="acme")]
    d = schedule(policy_input(fleet(2), [rjob("r")], run, [c]))
    assert preempted(d) == ["sp"]


def test_reserved_job_never_preempts_on_demand() -> None:
    c = contract("c-1", gpus=8)
    run = [running("od", {"n0": 8}, cls=ON_DEMAND)]
    d = schedule(policy_input(fleet(1), [rjob("r")], run, [c]))
    assert d.preemptions == ()
    assert "nothing it may preempt" in d.pending["r"]


# --- lending (rule 4)


def test_unused_reserved_capacity_is_lent_to_spot_only() -> None:
    c = contract("c-1", gpus=8)
    inp = policy_input(fleet(2), [job("sp", 16, cls=SPOT, tenant="y")], (), [c])
    d = schedule(inp)
    check_invariants(inp, d)
    assert list(placed(d)) == ["sp"]
    assert d.placements[0].on_lent_capacity is True
    for blocked in (job("od", 16, cls=ON_DEMAND, tenant="x"), job("in", 16, cls=INTERNAL)):
        d = schedule(policy_input(fleet(2), [blocked], (), [c]))
        assert d.placements == ()
        assert "held for reserved contracts" in d.pending[blocked.job_id]


def test_spot_borrows_only_when_general_capacity_runs_out() -> None:
    c = contract("c-1", gpus=8)
    d = schedule(policy_input(fleet(2), [job("sp", 8, tenant="y"), job("sp2", 8, tenant="z")], (), [c]))
    lent = {p.job_id: p.on_lent_capacity for p in d.placements}
    assert sorted(lent.values()) == [False, True]


def test_on_demand_and_internal_may_use_what_is_not_reserved() -> None:
    c = contract("c-1", gpus=8)
    d = schedule(policy_input(fleet(2), [job("od", 8, cls=ON_DEMAND, tenant="x")], (), [c]))
    assert list(placed(d)) == ["od"] and not d.placements[0].on_lent_capacity


def test_the_holder_uses_its_reserved_capacity_not_lent() -> None:
    c = contract("c-1", gpus=8)
    d = schedule(policy_input(fleet(2), [rjob("r"), job("od", 8, cls=ON_DEMAND, tenant="x")], (), [c]))
    assert set(placed(d)) == {"r", "od"}
    assert not any(p.on_lent_capacity for p in d.placements)


def test_capacity_used_by_the_holder_is_no_longer_reserved() -> None:
    c = contract("c-1", gpus=8)
    run = [running("r", {"n0": 8}, cls=RESERVED, tenant="bigco", contract="c-1")]
    d = schedule(policy_input(fleet(2), [job("od", 8, cls=ON_DEMAND, tenant="x")], run, [c]))
    assert list(placed(d)) == ["od"]


def test_lent_capacity_is_reclaimed_when_the_holder_asks() -> None:
    c = contract("c-1", gpus=8)
    run = [running("sp", {"n1": 8}, tenant="y", lent=True), running("od", {"n0": 8}, cls=ON_DEMAND, tenant="x")]
    first = schedule(policy_input(fleet(2), [rjob("r")], run, [c]))
    assert first.preemptions == (Preemption("sp", "reserved contract c-1 reclaims its lent capacity", for_job_id="r"),)
    # Next pass, once the executor released the GPUs: the holder starts there.
    then = schedule(policy_input(fleet(2), [rjob("r")], run[1:], [c]))
    assert list(placed(then)["r"]) == ["n1"]
