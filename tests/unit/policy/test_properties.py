"""Invariants of schedule() over random fleets, running sets and queues."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import INTERNAL_TENANT, JobClass, PolicyInput, RunningJob
from tests.unit.policy.factories import (
    H100,
    H200,
    NOW,
    RESERVED,
    check_invariants,
    contract,
    gpu,
    job,
    node,
    policy_input,
    running,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TENANTS = ("a", "b", "c", "bigco", INTERNAL_TENANT)
CLASSES = (JobClass.SPOT, JobClass.ON_DEMAND, JobClass.RESERVED, JobClass.INTERNAL)


@st.composite
def scenarios(draw: st.DrawFn, queue_size: int = 10, unsandboxed: bool = False) -> PolicyInput:
    n_nodes = draw(st.integers(1, 6))
    nodes = []
    for k in range(n_nodes):
        size = draw(st.sampled_from((4, 8, 8)))
        nodes.append(
            node(
                f"n{k}",
                size,
                draw(st.sampled_from((H200, H200, H100))),
                unhealthy=draw(st.sets(st.integers(0, size - 1), max_size=2)) if draw(st.booleans()) else (),
                cordoned=draw(st.integers(0, 9)) == 0,
                power_w=draw(st.sampled_from((0.0, 500.0, 3000.0))),
                sandboxed=draw(st.integers(0, 2)) > 0 if unsandboxed else True,
            )
        )
    isolation = draw(st.booleans())
    contracts = []
    if draw(st.booleans()):
        contracts.append(
            contract(
                "c-1",
                tenant="bigco",
                gpus=draw(st.integers(0, 24)),
                power_w=draw(st.sampled_from((0.0, 0.0, 8000.0))),
                start=NOW + draw(st.sampled_from((-3600.0, -3600.0, 100.0, 5000.0))),
                end=NOW + draw(st.sampled_from((3600.0, 3600.0, -10.0))),
                model=draw(st.sampled_from((None, H200))),
            )
        )
    # Running work: carve each node's GPUs into jobs; one owner per node under isolation.
    run: list[RunningJob] = []
    for nd in nodes:
        free = list(range(len(nd.gpus)))
        owner_tenant = draw(st.sampled_from(TENANTS))
        while free and draw(st.integers(0, 2)) > 0:
            take = draw(st.integers(1, len(free)))
            gpus, free = free[:take], free[take:]
            tenant = owner_tenant if isolation else draw(st.sampled_from(TENANTS))
            cls = JobClass.INTERNAL if tenant == INTERNAL_TENANT else draw(st.sampled_from(CLASSES[:3]))
            run.append(
                running(
                    f"r{len(run)}",
                    {nd.node_id: gpus},
                    cls=cls,
                    tenant=tenant,
                    started_at=NOW - draw(st.sampled_from((10.0, 120.0, 4000.0))),
                    checkpoint_at=NOW - draw(st.sampled_from((5.0, 50.0))) if draw(st.booleans()) else None,
                    notice_at=NOW - 1 if draw(st.integers(0, 7)) == 0 else None,
                    lent=cls == JobClass.SPOT and draw(st.booleans()),
                    contract="c-1" if cls == JobClass.RESERVED else None,
                    requeues=draw(st.integers(0, 4)),
                )
            )
    queue = []
    for k in range(draw(st.integers(0, queue_size))):
        per_node = draw(st.sampled_from((1, 2, 4, 8)))
        cls = draw(st.sampled_from(CLASSES))
        tenant = (
            INTERNAL_TENANT
            if cls == JobClass.INTERNAL
            else ("bigco" if cls == RESERVED else draw(st.sampled_from(TENANTS[:3])))
        )
        queue.append(
            job(
                f"q{k}",
                per_node * draw(st.integers(1, 3)),
                per_node=per_node,
                cls=cls,
                tenant=tenant,
                submitted_at=float(draw(st.integers(0, 5))),
                model=draw(st.sampled_from((None, None, H200, H100))),
                power_w=draw(st.sampled_from((300.0, 700.0))),
                contract="c-1" if cls == RESERVED else None,
            )
        )
    return policy_input(
        nodes,
        queue,
        run,
        contracts,
        usage={t: float(draw(st.integers(0, 3))) * 1e5 for t in TENANTS},
        internal_floor_gpus=draw(st.sampled_from((0, 8, 32))),
        site_power_budget_w=draw(st.sampled_from((math.inf, 20_000.0, 60_000.0))),
        one_tenant_per_node=isolation,
        min_runtime_s=draw(st.sampled_from((0.0, 60.0, 300.0))),
        reclaim_warning_s=300.0,
    )


@SETTINGS
@given(scenarios())
def test_invariants_hold(inp: PolicyInput) -> None:
    """No GPU in two allocations, whole gangs at exactly g per node, only placeable GPUs on
    uncordoned nodes, isolation, the power budget, a reason for every waiting job."""
    d = schedule(inp)
    check_invariants(inp, d)


@SETTINGS
@given(scenarios(unsandboxed=True))
def test_invariants_hold_with_nodes_that_cannot_sandbox(inp: PolicyInput) -> None:
    """Also: tenant work is never placed on, nor has room made for it on, a node that cannot sandbox it."""
    d = schedule(inp)
    check_invariants(inp, d)
    for_tenants = {j.job_id for j in inp.queue if j.job_class != JobClass.INTERNAL and j.tenant != INTERNAL_TENANT}
    if all(n.sandboxed for n in inp.nodes) or not for_tenants:
        return
    sandboxed = {n.node_id for n in inp.nodes if n.sandboxed}
    for p in d.preemptions:  # each victim for a tenant job frees some node that job may use
        if p.for_job_id in for_tenants:
            v = next(r for r in inp.running if r.job_id == p.job_id)
            assert any(nid in sandboxed for nid, _ in v.placement), p


@SETTINGS
@given(scenarios())
def test_preemptions_follow_the_class_rules(inp: PolicyInput) -> None:
    d = schedule(inp)
    runs = {r.job_id: r for r in inp.running}
    queued = {j.job_id: j for j in inp.queue}
    placed_ids = {p.job_id for p in d.placements}
    for p in d.preemptions:
        v = runs[p.job_id]
        assert p.requeue == (v.requeues < inp.config.max_requeues) or p.for_job_id is None
        if p.for_job_id is None:
            continue  # GPU unhealthy, or a reserved job outside its contract
        assert p.for_job_id not in placed_ids  # room is made now, the job starts next pass
        beneficiary = queued[p.for_job_id]
        assert inp.now - v.started_at >= inp.config.min_runtime_s
        assert v.job_class != JobClass.RESERVED
        if v.job_class == JobClass.ON_DEMAND:
            assert beneficiary.job_class == JobClass.INTERNAL and p.reason == "internal work reclaims its floor"
        if v.job_class == JobClass.INTERNAL:
            # Internal above its floor yields only to a reserved contract (docs/DESIGN.md section 3).
            assert beneficiary.job_class == JobClass.RESERVED
        else:
            assert v.job_class < beneficiary.job_class


@SETTINGS
@given(scenarios())
def test_same_input_same_decision(inp: PolicyInput) -> None:
    assert schedule(inp) == schedule(inp)


def _fits_after_evicting(inp: PolicyInput, model: str | None, g: int, n: int, tenant: str) -> bool:
    """Would n slices of g GPUs fit if every spot job old enough (and all work under notice) were gone?"""
    ok = 0
    iso = inp.config.one_tenant_per_node
    for nd in inp.nodes:
        if nd.cordoned or (model is not None and nd.gpu_model != model):
            continue
        stays = [
            r
            for r in inp.running
            if any(nid == nd.node_id for nid, _ in r.placement)
            and r.preemption_notice_at is None
            and not (r.job_class == JobClass.SPOT and inp.now - r.started_at >= inp.config.min_runtime_s)
        ]
        if iso and any(r.tenant != tenant or r.job_class == JobClass.INTERNAL for r in stays):
            continue
        held = {u for r in stays for nid, gs in r.placement if nid == nd.node_id for u in gs}
        if len(nd.placeable - held) >= g:
            ok += 1
    return ok >= n


@SETTINGS
@given(scenarios(queue_size=0), st.sampled_from((1, 2, 4, 8)), st.integers(1, 2))
def test_reserved_capacity_is_honoured_inside_its_window(inp: PolicyInput, g: int, n: int) -> None:
    """A reserved job inside its active contract that would fit once lower classes left gets that room."""
    c = contract("c-1", tenant="bigco", gpus=64, model=H200)
    run = tuple(r for r in inp.running if r.job_class != JobClass.RESERVED)  # the contract is unused
    j = job("r", g * n, per_node=g, cls=RESERVED, tenant="bigco", contract="c-1")
    cfg = inp.config
    inp = PolicyInput(
        now=inp.now,
        nodes=inp.nodes,
        contracts=(c,),
        running=run,
        queue=(j,),
        config=type(cfg)(
            internal_floor_gpus=10**6,  # internal work is below its floor: only spot may go
            one_tenant_per_node=cfg.one_tenant_per_node,
            min_runtime_s=cfg.min_runtime_s,
        ),
    )
    d = schedule(inp)
    check_invariants(inp, d)
    if _fits_after_evicting(inp, H200, g, n, "bigco"):
        assert (
            "r" in {p.job_id for p in d.placements}
            or any(p.for_job_id == "r" for p in d.preemptions)
            or d.pending["r"].startswith("waiting for preempted work")
        ), d.pending.get("r")


def test_decisions_do_not_depend_on_the_hash_seed() -> None:
    """Same input, different PYTHONHASHSEED: the same decision (no set or dict order leaks out)."""
    code = (
        "from neocloud.bench.schedule import build_input\n"
        "from neocloud.scheduler.policy.engine import schedule\n"
        "d = schedule(build_input(nodes=300, queued=400, seed=3))\n"
        "import hashlib; print(hashlib.sha256(repr(d).encode()).hexdigest())\n"
    )
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[3],
        )
        outs.add(out.stdout.strip())
    assert len(outs) == 1


def test_gpu_helper_names_match_nodes() -> None:
    assert gpu("n0", 3) in node("n0").gpus
