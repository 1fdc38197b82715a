"""Terse builders for policy inputs, and the invariants every Decision must keep.

GPU ids are "<node>-g<index>", so a test can name GPUs without the node object:
`running("r1", on={"n0": 4})` holds GPUs 0-3 of n0, `on={"n0": [4, 5]}` GPUs 4 and 5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from neocloud.scheduler.policy.types import (
    INTERNAL_TENANT,
    Contract,
    Decision,
    JobClass,
    JobRequest,
    NodeView,
    PolicyConfig,
    PolicyInput,
    RunningJob,
)

SPOT = JobClass.SPOT
ON_DEMAND = JobClass.ON_DEMAND
RESERVED = JobClass.RESERVED
INTERNAL = JobClass.INTERNAL
H200 = "NVIDIA H200"
H100 = "NVIDIA H100"
NOW = 1_000_000.0


def gpu(node_id: str, index: int) -> str:
    return f"{node_id}-g{index}"


def node(
    node_id: str,
    gpus: int = 8,
    model: str = H200,
    unhealthy: Iterable[int] = (),
    cordoned: bool = False,
    power_w: float = 0.0,
    sandboxed: bool = True,
) -> NodeView:
    ids = tuple(gpu(node_id, k) for k in range(gpus))
    bad = set(unhealthy)
    return NodeView(
        node_id=node_id,
        gpu_model=model,
        gpus=ids,
        placeable=frozenset(u for k, u in enumerate(ids) if k not in bad),
        power_draw_w=power_w,
        cordoned=cordoned,
        sandboxed=sandboxed,
    )


def fleet(count: int, gpus: int = 8, model: str = H200, prefix: str = "n", power_w: float = 0.0) -> list[NodeView]:
    return [node(f"{prefix}{k}", gpus, model, power_w=power_w) for k in range(count)]


def job(
    job_id: str,
    gpus: int = 8,
    per_node: int | None = None,
    cls: JobClass = SPOT,
    tenant: str = "acme",
    submitted_at: float = 0.0,
    model: str | None = None,
    power_w: float = 700.0,
    contract: str | None = None,
    requeues: int = 0,
) -> JobRequest:
    if tenant == "acme" and cls == INTERNAL:
        tenant = INTERNAL_TENANT
    return JobRequest(
        job_id=job_id,
        tenant=tenant,
        job_class=cls,
        gpus=gpus,
        gpus_per_node=per_node if per_node is not None else min(gpus, 8),
        submitted_at=submitted_at,
        gpu_model=model,
        expected_power_w_per_gpu=power_w,
        contract_id=contract,
        requeues=requeues,
    )


def running(
    job_id: str,
    on: Mapping[str, int | Sequence[int]],
    cls: JobClass = SPOT,
    tenant: str = "acme",
    started_at: float = NOW - 3600.0,
    checkpoint_at: float | None = None,
    notice_at: float | None = None,
    lent: bool = False,
    contract: str | None = None,
    power_w: float = 700.0,
    requeues: int = 0,
) -> RunningJob:
    if tenant == "acme" and cls == INTERNAL:
        tenant = INTERNAL_TENANT
    placement = tuple(
        (nid, tuple(gpu(nid, k) for k in (range(spec) if isinstance(spec, int) else spec))) for nid, spec in on.items()
    )
    return RunningJob(
        job_id=job_id,
        tenant=tenant,
        job_class=cls,
        placement=placement,
        started_at=started_at,
        expected_power_w_per_gpu=power_w,
        contract_id=contract,
        on_lent_capacity=lent,
        last_checkpoint_at=checkpoint_at,
        preemption_notice_at=notice_at,
        requeues=requeues,
    )


def contract(
    contract_id: str,
    tenant: str = "bigco",
    gpus: int = 0,
    power_w: float = 0.0,
    start: float = NOW - 86_400.0,
    end: float = NOW + 86_400.0,
    model: str | None = None,
) -> Contract:
    return Contract(contract_id, tenant, start, end, gpus=gpus, power_w=power_w, gpu_model=model)


def policy_input(
    nodes: Iterable[NodeView],
    queue: Iterable[JobRequest] = (),
    running: Iterable[RunningJob] = (),
    contracts: Iterable[Contract] = (),
    now: float = NOW,
    usage: Mapping[str, float] | None = None,
    **config: object,
) -> PolicyInput:
    cfg = PolicyConfig(**config)  # type: ignore[arg-type,unused-ignore]
    return PolicyInput(
        now=now,
        nodes=tuple(nodes),
        contracts=tuple(contracts),
        running=tuple(running),
        queue=tuple(queue),
        usage_gpu_s=dict(usage or {}),
        config=cfg,
    )


# --- reading a Decision


def placed(d: Decision) -> dict[str, dict[str, tuple[str, ...]]]:
    """job id -> {node id: GPUs}."""
    return {p.job_id: dict(p.placement) for p in d.placements}


def preempted(d: Decision) -> list[str]:
    return [p.job_id for p in d.preemptions]


def warned(d: Decision) -> list[str]:
    return [w.job_id for w in d.warnings]


def check_invariants(inp: PolicyInput, d: Decision) -> None:
    """What must hold for every input (asserts)."""
    nodes = {n.node_id: n for n in inp.nodes}
    queued = {j.job_id: j for j in inp.queue}
    running_ids = {j.job_id for j in inp.running}
    owner: dict[str, set[str]] = {}
    taken: set[str] = set()
    gone = {p.job_id for p in d.preemptions}

    def key(tenant: str, cls: JobClass) -> str:
        return INTERNAL_TENANT if cls == INTERNAL or tenant == INTERNAL_TENANT else tenant

    for r in inp.running:
        for nid, gs in r.placement:
            taken.update(gs)
            owner.setdefault(nid, set()).add(key(r.tenant, r.job_class))
    placed_ids = set()
    started_w = 0.0
    for p in d.placements:
        j = queued[p.job_id]  # only queued jobs are placed
        assert p.job_id not in placed_ids
        placed_ids.add(p.job_id)
        assert sum(len(gs) for _, gs in p.placement) == j.gpus  # all or nothing
        assert len({nid for nid, _ in p.placement}) == len(p.placement)
        for nid, gs in p.placement:
            n = nodes[nid]
            assert len(gs) == j.gpus_per_node  # exactly g per node
            assert not n.cordoned
            assert j.gpu_model is None or n.gpu_model == j.gpu_model
            assert set(gs) <= n.placeable  # healthy GPUs only
            assert not (set(gs) & taken), "a GPU in two allocations"
            taken.update(gs)
            owner.setdefault(nid, set()).add(key(j.tenant, j.job_class))
        assert len({nodes[nid].gpu_model for nid, _ in p.placement}) == 1
        if key(j.tenant, j.job_class) != INTERNAL_TENANT:
            assert all(nodes[nid].sandboxed for nid, _ in p.placement), "tenant work on an unsandboxed node"
        started_w += j.gpus * j.expected_power_w_per_gpu
    if inp.config.one_tenant_per_node:
        new_nodes = {nid for p in d.placements for nid, _ in p.placement}
        for nid in new_nodes:
            assert len(owner[nid]) == 1, f"isolation broken on {nid}: {owner[nid]}"
    measured = sum(n.power_draw_w for n in inp.nodes)
    if started_w:
        assert measured + started_w <= inp.config.site_power_budget_w + 1e-6
    for p in d.preemptions:
        assert p.job_id in running_ids
    assert len(gone) == len(d.preemptions), "a job preempted twice"
    for r in inp.running:
        if r.preemption_notice_at is not None:
            assert r.job_id not in gone
    assert set(d.pending) | placed_ids == set(queued)
    assert not (set(d.pending) & placed_ids)
    for w in d.warnings:
        assert w.job_id in running_ids and w.job_id not in gone
    for job_id, room in d.rooms.items():  # room is made only where the job may run
        j = queued[job_id]
        if key(j.tenant, j.job_class) != INTERNAL_TENANT:
            assert all(nodes[nid].sandboxed for nid in room), f"room for {job_id} on an unsandboxed node"
