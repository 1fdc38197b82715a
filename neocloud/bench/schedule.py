"""One scheduling pass over a synthetic fleet at full scale: how long the policy
takes as the controller runs it (`decide()`: the pure `schedule()` with the cyclic
GC paused; the input is built once, outside the timing).

The fleet: `nodes` nodes of 8 GPUs (70 % H200, 30 % H100), about 60 % of the
GPUs running internal / reserved / on-demand / spot jobs of 1, 2, 4, 8 and 16
GPUs under tenant isolation (H100s scarcer: 70 % busy, so some queued work has
to preempt), about 0.5 % of GPUs unhealthy and 0.3 % of nodes
cordoned, a few reserved contracts (one by power, one starting soon), a site
power budget, an internal floor a little above what internal work holds, and
`queued` jobs of mixed classes, sizes (1 to 64 GPUs) and tenants.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Any

from neocloud.scheduler.control import decide
from neocloud.scheduler.policy import (
    INTERNAL_TENANT,
    Contract,
    JobClass,
    JobRequest,
    NodeView,
    PolicyConfig,
    PolicyInput,
    RunningJob,
)

GPUS_PER_NODE = 8
NOW = 1_800_000_000.0
MODELS = ("NVIDIA H200", "NVIDIA H100")
RESERVED_TENANTS = tuple(f"lab-{k}" for k in range(5))
TENANTS = tuple(f"tenant-{k:03d}" for k in range(300))
RUN_SIZES = ((1, 25), (2, 15), (4, 15), (8, 30), (16, 15))  # (GPUs, weight by job count)
QUEUE_SIZES = ((1, 25), (2, 15), (4, 15), (8, 25), (16, 12), (32, 5), (64, 3))
RUN_CLASSES = ((JobClass.INTERNAL, 40), (JobClass.RESERVED, 15), (JobClass.ON_DEMAND, 20), (JobClass.SPOT, 25))
BUSY = {MODELS[0]: 0.56, MODELS[1]: 0.7}
QUEUE_CLASSES = ((JobClass.INTERNAL, 15), (JobClass.RESERVED, 10), (JobClass.ON_DEMAND, 25), (JobClass.SPOT, 50))


def _pick(rng: random.Random, table: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _queued_model(rng: random.Random, cls: JobClass) -> str | None:
    if rng.random() < 0.3:
        return None
    if cls == JobClass.RESERVED:
        return MODELS[0]  # the contracts are for H200s
    return MODELS[0] if rng.random() < 0.6 else MODELS[1]


def _tenant(rng: random.Random, cls: JobClass) -> str:
    if cls == JobClass.INTERNAL:
        return INTERNAL_TENANT
    if cls == JobClass.RESERVED:
        return rng.choice(RESERVED_TENANTS)
    return TENANTS[min(int(rng.paretovariate(1.2)) - 1, len(TENANTS) - 1)]  # a few big tenants, a long tail


def build_input(nodes: int = 28_800, queued: int = 10_000, seed: int = 0) -> PolicyInput:
    """A deterministic synthetic PolicyInput (see the module docstring)."""
    rng = random.Random(seed)
    models = [MODELS[0] if rng.random() < 0.7 else MODELS[1] for _ in range(nodes)]
    names = [f"node-{k:05d}" for k in range(nodes)]
    gpu_ids = [tuple(f"GPU-{k:05d}-{g}" for g in range(GPUS_PER_NODE)) for k in range(nodes)]
    # Running work: whole nodes for 8/16-GPU jobs, one tenant's small jobs packed on its open node.
    free_nodes = {m: [k for k in range(nodes) if models[k] == m] for m in MODELS}
    for lst in free_nodes.values():
        rng.shuffle(lst)
    used = [0] * nodes
    open_node: dict[tuple[str, str], int] = {}
    jobs: list[tuple[JobClass, str, list[tuple[int, int, int]]]] = []
    # H100s are scarcer (70 % busy) than H200s (56 %): 60 % of all GPUs run work.
    target = {m: int(BUSY[m] * models.count(m) * GPUS_PER_NODE) for m in MODELS}
    busy = dict.fromkeys(MODELS, 0)
    while any(busy[m] < target[m] for m in MODELS):
        size = _pick(rng, RUN_SIZES)
        cls = _pick(rng, RUN_CLASSES)
        tenant = _tenant(rng, cls)
        model = MODELS[0] if cls == JobClass.RESERVED or busy[MODELS[1]] >= target[MODELS[1]] else MODELS[1]
        if busy[model] >= target[model]:
            continue
        parts: list[tuple[int, int, int]] = []
        if size >= GPUS_PER_NODE:
            pool = free_nodes[model]
            if len(pool) < size // GPUS_PER_NODE:
                break
            for _ in range(size // GPUS_PER_NODE):
                k = pool.pop()
                parts.append((k, 0, GPUS_PER_NODE))
                used[k] = GPUS_PER_NODE
        else:
            key = (tenant if cls != JobClass.INTERNAL else INTERNAL_TENANT, model)
            k = open_node.get(key, -1)
            if k < 0 or used[k] + size > GPUS_PER_NODE:
                if not free_nodes[model]:
                    break
                k = open_node[key] = free_nodes[model].pop()
            parts.append((k, used[k], size))
            used[k] += size
        jobs.append((cls, tenant, parts))
        busy[model] += size

    reserved_now: dict[str, int] = {}
    for cls, tenant, parts in jobs:
        if cls == JobClass.RESERVED:
            reserved_now[tenant] = reserved_now.get(tenant, 0) + sum(c for _, _, c in parts)
    gpus = nodes * GPUS_PER_NODE
    room = max(8, gpus // 225)  # each contract has room for about 1,000 more GPUs at full scale
    contracts = [
        Contract(f"c-{t}", t, NOW - 86_400, NOW + 30 * 86_400, gpus=reserved_now.get(t, 0) + room, gpu_model=MODELS[0])
        for t in RESERVED_TENANTS
    ]
    contracts.append(Contract("c-power", RESERVED_TENANTS[0], NOW - 86_400, NOW + 86_400, power_w=gpus * 9.0))  # 2 MW
    contracts.append(
        Contract("c-soon", RESERVED_TENANTS[1], NOW + 120, NOW + 86_400, gpus=max(8, room // 2), gpu_model=MODELS[0])
    )

    running = []
    lent_budget = 300
    for n, (cls, tenant, parts) in enumerate(jobs):
        started = NOW - rng.uniform(0, 3 * 86_400) if rng.random() > 0.01 else NOW - rng.uniform(0, 50)
        lent = cls == JobClass.SPOT and lent_budget > 0 and rng.random() < 0.05
        lent_budget -= lent
        running.append(
            RunningJob(
                job_id=f"run-{n:06d}",
                tenant=tenant,
                job_class=cls,
                placement=tuple((names[k], gpu_ids[k][first : first + c]) for k, first, c in parts),
                started_at=started,
                expected_power_w_per_gpu=700.0,
                contract_id=f"c-{tenant}" if cls == JobClass.RESERVED else None,
                on_lent_capacity=lent,
                last_checkpoint_at=started + rng.uniform(0, NOW - started) if rng.random() < 0.5 else None,
                preemption_notice_at=NOW - 5 if cls == JobClass.SPOT and rng.random() < 0.01 else None,
            )
        )

    node_views = []
    for k in range(nodes):
        bad = {rng.randrange(GPUS_PER_NODE)} if rng.random() < 0.04 else set()
        node_views.append(
            NodeView(
                node_id=names[k],
                gpu_model=models[k],
                gpus=gpu_ids[k],
                placeable=frozenset(g for x, g in enumerate(gpu_ids[k]) if x not in bad),
                power_draw_w=used[k] * 610.0 + (GPUS_PER_NODE - used[k]) * 80.0,
                cordoned=rng.random() < 0.003,
            )
        )

    queue = []
    for n in range(queued):
        cls = _pick(rng, QUEUE_CLASSES)
        size = _pick(rng, QUEUE_SIZES)
        tenant = _tenant(rng, cls)
        queue.append(
            JobRequest(
                job_id=f"q-{n:06d}",
                tenant=tenant,
                job_class=cls,
                gpus=size,
                gpus_per_node=min(size, GPUS_PER_NODE),
                submitted_at=NOW - rng.uniform(0, 6 * 3600),
                gpu_model=_queued_model(rng, cls),
                contract_id=f"c-{tenant}" if cls == JobClass.RESERVED else None,
            )
        )
    internal_now = sum(sum(len(g) for _, g in r.placement) for r in running if r.job_class == JobClass.INTERNAL)
    usage = {t: rng.uniform(0, 5e8) for t in (*TENANTS, *RESERVED_TENANTS, INTERNAL_TENANT)}
    config = PolicyConfig(
        internal_floor_gpus=internal_now + 2048,
        site_power_budget_w=nodes * GPUS_PER_NODE * 700.0 * 0.9,
        tenant_weights={INTERNAL_TENANT: 4.0, RESERVED_TENANTS[0]: 2.0},
    )
    return PolicyInput(
        now=NOW,
        nodes=tuple(node_views),
        contracts=tuple(contracts),
        running=tuple(running),
        queue=tuple(queue),
        usage_gpu_s=usage,
        config=config,
    )


def policy_pass(nodes: int = 28_800, queued: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Median wall time of one `decide()` over 5 runs after a warm-up."""
    inp = build_input(nodes, queued, seed)
    gc.collect()  # the input is built: start the timed passes from a settled heap
    decision = decide(inp)  # warm-up
    times = []
    for _ in range(5):
        del decision  # free the last pass's output outside the timed region: it is not part of the next pass
        t0 = time.perf_counter()
        decision = decide(inp)
        times.append(time.perf_counter() - t0)
    return {
        "benchmark": "schedule",
        "policy_pass_ms": round(statistics.median(times) * 1e3, 1),
        "target_ms": 100,
        "nodes": nodes,
        "gpus": nodes * GPUS_PER_NODE,
        "running": len(inp.running),
        "queued": queued,
        "placements": len(decision.placements),
        "preemptions": len(decision.preemptions),
        "warnings": len(decision.warnings),
    }
