"""The durable job state's domain types: frozen dataclasses the store returns
and the API converts to protobuf at the edge. Times are Unix seconds (float),
as in the policy's types."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from neocloud.scheduler.policy.types import Contract, JobClass

# How job classes are spelled in the store and on the command line.
CLASS_NAMES: dict[JobClass, str] = {
    JobClass.INTERNAL: "internal",
    JobClass.RESERVED: "reserved",
    JobClass.ON_DEMAND: "on_demand",
    JobClass.SPOT: "spot",
}
CLASSES_BY_NAME: dict[str, JobClass] = {name: cls for cls, name in CLASS_NAMES.items()}

DEFAULT_GRACE_S = 30.0


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PREEMPTING = "preempting"  # told to stop; its allocations are still open
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.PREEMPTING})  # holding GPUs


class Role(StrEnum):
    OPERATOR = "operator"  # runs the site: admin, sees every job
    INTERNAL = "internal"  # the lab's own teams: class internal only
    TENANT = "tenant"  # an outside customer: its own jobs only


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a submitter asks for. Exactly one of `command` and `entrypoint` is set."""

    tenant: str
    client_request_id: str
    job_class: JobClass
    gpus: int
    gpus_per_node: int
    command: tuple[str, ...] | None = None
    entrypoint: str | None = None  # "package.module:function"
    env: dict[str, str] = field(default_factory=dict)
    gpu_model: str | None = None
    grace_s: float = DEFAULT_GRACE_S
    max_runtime_s: float | None = None
    requeue_on_preempt: bool = True
    contract_id: str | None = None
    name: str = ""  # a label for people, not unique
    cpus: int = 0  # CPU cores reserved on each node (0: none asked)
    memory_bytes: int = 0  # memory reserved on each node (0: none asked)
    after_ok: tuple[str, ...] = ()  # jobs that must succeed first (store/deps.py)
    array: str = ""  # "0-99": one job per index (store/arrays.py); every task keeps the expression
    workdir_digest: str = ""  # an uploaded workdir ("sha256:<hex>", scheduler/artifacts) each rank runs in
    ray: bool = False  # a private Ray spanning the job's ranks (executor/private_ray.py); the command is its driver


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    spec: JobSpec
    state: JobState
    submitted_at: float
    queue_position: float  # queue order; a requeued job keeps its place
    started_at: float | None = None
    ended_at: float | None = None
    requeues: int = 0
    exit_code: int | None = None
    message: str = ""
    cancel_requested: bool = False
    last_checkpoint_at: float | None = None
    preemption_notice_at: float | None = None
    array_job_id: str | None = None  # a task of an array: its first task's job id
    array_index: int | None = None

    @property
    def tenant(self) -> str:
        return self.spec.tenant

    @property
    def job_class(self) -> JobClass:
        return self.spec.job_class

    @property
    def array_env(self) -> dict[str, str]:
        """What a task of an array is told of it, in its environment (none for other jobs)."""
        if self.array_job_id is None:
            return {}
        return {"NEOCLOUD_ARRAY_JOB_ID": self.array_job_id, "NEOCLOUD_ARRAY_TASK_ID": str(self.array_index)}


@dataclass(frozen=True, slots=True)
class Allocation:
    """GPUs of one node held by one job over [start, end); end is None while open."""

    allocation_id: str
    job_id: str
    tenant: str
    job_class: JobClass
    node_id: str
    gpu_uuids: tuple[str, ...]
    start: float
    end: float | None = None
    end_reason: str | None = None
    sandbox: str = ""  # what its rank ran in (JSON: uid, devices, limits, cgroup; or why unsandboxed)


@dataclass(frozen=True, slots=True)
class JobEvent:
    event_id: int
    job_id: str
    at: float
    kind: str  # submitted, started, preemption_notice, requeued, cancel_requested, succeeded, ...
    message: str
    state: JobState  # the job's state after the event


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant token carries its tenant, the others none."""

    role: Role
    tenant: str | None
    token_name: str = ""
    expires_at: float | None = None  # Unix seconds; None: never


@dataclass(frozen=True, slots=True)
class TokenRecord:
    name: str
    role: Role
    tenant: str | None
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None  # None: never
    token_id: str = ""  # the first 12 hex of the token's SHA-256: names one token of a rotated name
    superseded_at: float | None = None  # when a rotation replaced it (it lives out its grace)


@dataclass(frozen=True, slots=True)
class TenantRecord:
    name: str
    weight: float
    created_at: float
    internal: bool = False  # an internal team: submits class internal only, usage reported under its name
    uid_offset: int = 0  # its sandbox uid in the nodes' range (store/uids.py)


@dataclass(frozen=True, slots=True)
class ContractRecord:
    contract_id: str
    tenant: str
    start: float
    end: float
    gpus: int = 0
    power_w: float = 0.0
    gpu_model: str | None = None
    created_at: float = 0.0

    def as_policy(self) -> Contract:
        return Contract(
            contract_id=self.contract_id,
            tenant=self.tenant,
            start=self.start,
            end=self.end,
            gpus=self.gpus,
            power_w=self.power_w,
            gpu_model=self.gpu_model,
        )


@dataclass(frozen=True, slots=True)
class CordonRecord:
    node_id: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class ContractShortfall:
    """Reserved capacity a contract promised but the fleet did not deliver in one hour
    (its GPUs cordoned, unhealthy or lost while the tenant had demand for them)."""

    contract_id: str
    tenant: str
    hour: int
    undelivered_gpu_ms: int
