"""The policy's inputs and outputs: plain frozen dataclasses, no I/O.

The policy is a pure function `schedule(PolicyInput) -> Decision`
(scheduler/policy/engine.py). Times are Unix seconds (float), power is watts,
GPUs are named by NVML UUID and grouped by node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class JobClass(IntEnum):
    """Capacity classes; a larger value outranks a smaller one (docs/DESIGN.md section 3)."""

    SPOT = 1
    ON_DEMAND = 2
    RESERVED = 3
    INTERNAL = 4


INTERNAL_TENANT = "internal"


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the policy may use it."""

    node_id: str
    gpu_model: str
    gpus: tuple[str, ...]  # every GPU UUID of the node, in index order
    placeable: frozenset[str]  # healthy, not cordoned, and confirmed free of stray processes
    power_draw_w: float = 0.0  # measured draw of the whole node now
    cordoned: bool = False  # the operator drains it: nothing new is placed
    sandboxed: bool = True  # its runners can sandbox tenant ranks; if not, internal work only


@dataclass(frozen=True, slots=True)
class Contract:
    """A reserved contract: `gpus` GPUs (of `gpu_model`, if set) or `power_w` watts, over [start, end)."""

    contract_id: str
    tenant: str
    start: float
    end: float
    gpus: int = 0
    power_w: float = 0.0
    gpu_model: str | None = None

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job waiting to be placed (queued, or requeued after preemption)."""

    job_id: str
    tenant: str
    job_class: JobClass
    gpus: int
    gpus_per_node: int
    submitted_at: float  # queue order (FIFO within a class and tenant)
    gpu_model: str | None = None
    expected_power_w_per_gpu: float = 700.0
    contract_id: str | None = None  # reserved jobs run against this contract
    requeues: int = 0


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs now."""

    job_id: str
    tenant: str
    job_class: JobClass
    placement: tuple[tuple[str, tuple[str, ...]], ...]  # (node_id, GPU UUIDs) per node
    started_at: float
    expected_power_w_per_gpu: float = 700.0
    contract_id: str | None = None
    # Spot work running on capacity a reserved contract lent out: reclaimed first.
    on_lent_capacity: bool = False
    last_checkpoint_at: float | None = None  # reported by the job's runner
    preemption_notice_at: float | None = None  # already told to stop
    requeues: int = 0  # times this job was preempted and requeued before (for Preemption.requeue)

    @property
    def gpu_count(self) -> int:
        return sum(len(gpus) for _, gpus in self.placement)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    internal_floor_gpus: int = 0  # GPUs internal work may always reclaim
    site_power_budget_w: float = float("inf")
    one_tenant_per_node: bool = True  # no two tenants on a node, nor a tenant beside internal work
    min_runtime_s: float = 60.0  # a job runs at least this long before it may be preempted
    max_requeues: int = 3  # after this many preemptions a job is no longer requeued
    fair_share_half_life_s: float = 7 * 24 * 3600.0
    reclaim_warning_s: float = 300.0  # horizon of the early reclaim warning
    tenant_weights: dict[str, float] = field(default_factory=dict)  # missing tenants weigh 1.0


@dataclass(frozen=True, slots=True)
class PolicyInput:
    now: float
    nodes: tuple[NodeView, ...]
    contracts: tuple[Contract, ...]
    running: tuple[RunningJob, ...]
    queue: tuple[JobRequest, ...]
    # Decayed past usage per tenant in GPU-seconds (see fairshare.decay); the
    # policy adds what is running now.
    usage_gpu_s: dict[str, float] = field(default_factory=dict)
    config: PolicyConfig = field(default_factory=PolicyConfig)
    # Queued job -> the nodes an earlier pass preempted work on for it (Decision.rooms, handed back):
    # held for that job alone, which is placed there once they are free.
    rooms: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: str
    placement: tuple[tuple[str, tuple[str, ...]], ...]  # (node_id, GPU UUIDs), whole nodes first
    on_lent_capacity: bool = False


@dataclass(frozen=True, slots=True)
class Preemption:
    job_id: str
    reason: str  # e.g. "internal work reclaims its floor"
    for_job_id: str | None = None  # the job it makes room for
    requeue: bool = True


@dataclass(frozen=True, slots=True)
class ReclaimWarning:
    """Early notice: queued higher-class demand will need this job's GPUs soon."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    placements: tuple[Placement, ...] = ()
    preemptions: tuple[Preemption, ...] = ()
    warnings: tuple[ReclaimWarning, ...] = ()
    pending: dict[str, str] = field(default_factory=dict)  # job_id -> why it waits, in a tenant's words
    rooms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job_id -> nodes being freed for it
