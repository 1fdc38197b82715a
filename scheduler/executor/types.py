"""What the executor is asked to run and what it reports back: plain frozen
dataclasses, no Ray. The scheduler talks to an `Executor`; `RayExecutor`
(ray_executor.py) is the real one.

Times are Unix seconds (float). A job runs as one *rank* per node of its
placement; rank 0 runs on the first node the policy listed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from neocloud.domain.errors import InvalidArgumentError

# The Ray node label that names the neocloud node a Ray worker node serves
# (`ray start --labels neocloud.io/node-id=<node id>`).
NODE_LABEL = "neocloud.io/node-id"

# Why a rank ended (Exited.end_reason).
END_EXITED = "exited"  # the process exited by itself
END_PREEMPTED = "preempted"
END_CANCELLED = "cancelled"
END_MAX_RUNTIME = "max_runtime"
END_GANG_FAILED = "gang_failed"  # another rank of the gang exited non-zero
END_LOST = "lost"  # a rank's node or runner died; the survivors are stopped
END_WATCHDOG_FAILED = "watchdog_failed"  # the runner's watchdog broke, so it stopped the rank
END_DISK_QUOTA = "disk_quota"  # its job directory passed its disk quota (disk.py), so the runner stopped it

# Job ids name Ray objects and files: Kubernetes-label characters only, and short
# enough that "neocloud-<id>-<rank>" stays a readable actor name.
_JOB_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
# Node ids must be valid Ray label values (same syntax as Kubernetes label values).
_NODE_ID = _JOB_ID
_ENTRYPOINT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def valid_node_id(node_id: str) -> bool:
    """True if `node_id` can be a Ray node-label value (so a bundle can be pinned to it)."""
    return bool(_NODE_ID.fullmatch(node_id))


@dataclass(frozen=True)
class ExecJob:
    """One job as the executor runs it.

    Exactly one of `command` (argv, no shell) or `entrypoint` ("pkg.mod:func",
    called with no arguments by `python -c`; an int result is the exit code).
    """

    job_id: str
    command: list[str] | None = None
    entrypoint: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    grace_s: float = 30.0  # default notice period for cancel() and max_runtime
    max_runtime_s: float | None = None
    cpus: int = 0  # CPU cores reserved on each node, in its bundle (0: the executor's minimum)
    memory_bytes: int = 0  # memory reserved on each node, in its bundle (0: none)
    workdir_digest: str = ""  # an uploaded workdir ("sha256:<hex>"): each rank's job directory and cwd
    ray: bool = False  # a private Ray spans the ranks (private_ray.py); the command is its driver, on rank 0
    ray_token: str = field(default="", repr=False)  # that Ray's token, made by the executor at each start
    tenant: str | None = None  # whose rank: sandboxed as this tenant where the node can (None: internal tooling)
    # Its tenant's own uid in the node's range, given by the store; None (the executor used without a
    # store: tests, benchmarks) falls back to a hash of the tenant's name, which may collide.
    uid_offset: int | None = None
    internal: bool = False  # the lab's own work (class internal): it may also run, unsandboxed, where the node cannot

    def __post_init__(self) -> None:
        if not _JOB_ID.fullmatch(self.job_id):
            raise InvalidArgumentError(
                f"job id {self.job_id!r}: use 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
            )
        if (self.command is None) == (self.entrypoint is None):
            raise InvalidArgumentError(f"job {self.job_id}: give exactly one of command or entrypoint")
        if self.command is not None and (not self.command or not all(isinstance(a, str) for a in self.command)):
            raise InvalidArgumentError(f"job {self.job_id}: command must be a non-empty list of strings")
        if self.entrypoint is not None and not _ENTRYPOINT.fullmatch(self.entrypoint):
            raise InvalidArgumentError(
                f"job {self.job_id}: entrypoint {self.entrypoint!r} is not 'pkg.module:function'"
            )
        if not all(isinstance(k, str) and isinstance(v, str) and k and "=" not in k for k, v in self.env.items()):
            raise InvalidArgumentError(f"job {self.job_id}: env must map non-empty names (no '=') to strings")
        if not self.grace_s >= 0:
            raise InvalidArgumentError(f"job {self.job_id}: grace_s must be >= 0, got {self.grace_s}")
        if self.max_runtime_s is not None and not self.max_runtime_s > 0:
            raise InvalidArgumentError(f"job {self.job_id}: max_runtime_s must be > 0, got {self.max_runtime_s}")


@dataclass(frozen=True, slots=True)
class RayNodeInfo:
    """A Ray worker node labelled as a neocloud node."""

    alive: bool
    gpus: int  # GPUs the Ray node advertises (its total, not what is free)
    ray_node_id: str
    cpus: float | None = None  # CPUs and memory (bytes) it advertises; None: not known
    memory_bytes: float | None = None
    sandboxed: bool = True  # its runners can sandbox tenant ranks (or the operator allowed tenants there anyway)


@dataclass(frozen=True, slots=True)
class Started:
    """A rank's process is running. `gpu_indices` are what Ray assigned (and what
    CUDA_VISIBLE_DEVICES holds); `gpu_uuids` map them through the node's
    inventory, so they may differ from the UUIDs the policy asked for."""

    job_id: str
    rank: int
    node_id: str
    gpu_indices: tuple[int, ...]
    gpu_uuids: tuple[str, ...]
    pid: int
    at: float | None = None
    sandbox: str = ""  # the sandbox it runs in, as JSON (sandbox.Proof, or why it has none); "" not a tenant's


@dataclass(frozen=True, slots=True)
class Exited:
    """A rank ended. `exit_code` is the process's status (negative: killed by that
    signal), None if it never started (stopped while its placement group was pending)."""

    job_id: str
    rank: int
    exit_code: int | None
    end_reason: str  # one of the END_* values
    at: float | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The job touched NEOCLOUD_CHECKPOINT_FILE; `at` is the file's mtime."""

    job_id: str
    at: float


@dataclass(frozen=True, slots=True)
class NodeLost:
    """A Ray node labelled as this neocloud node was alive and is now dead."""

    node_id: str
    at: float


@dataclass(frozen=True, slots=True)
class JobLost:
    """A job lost a rank to a dead node or runner; its other ranks are being stopped
    (end reason "lost"). The caller should release() it."""

    job_id: str
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Released:
    """The job's placement group and runners are gone and no process of its groups
    survives (as far as its runners could check). `pids` are every process the job
    was seen to have, in the PID namespaces `pid_namespaces` its runners ran in
    (inodes; a container's under Kubernetes, not the host's NVML reports): the
    caller asks NVML that none is left on its GPUs (inventory.processes_gone)."""

    job_id: str
    pids: tuple[int, ...]
    verified: bool = True  # False: a runner was dead, so its node could not be checked
    pid_namespaces: tuple[int, ...] = ()  # empty: unknown, pids are matched in every namespace


ExecutorEvent = Started | Exited | Checkpoint | NodeLost | JobLost | Released


class Executor(Protocol):
    """What the scheduler needs from an execution engine. Every method returns
    quickly; results arrive as events from poll()."""

    def nodes(self) -> dict[str, RayNodeInfo]: ...

    def start(
        self,
        job: ExecJob,
        placement: Sequence[tuple[str, Sequence[str]]],
        inventory: Mapping[str, Sequence[str]] | None = None,
    ) -> None: ...

    def preempt(self, job_id: str, grace_s: float) -> None: ...

    def warn(self, job_id: str, reason: str) -> None: ...

    def cancel(self, job_id: str, grace_s: float | None = None) -> None: ...

    def release(self, job_id: str) -> None: ...

    def poll(self) -> list[ExecutorEvent]: ...

    def read_log(self, job_id: str, rank: int, offset: int = 0, max_bytes: int = 65536) -> tuple[bytes, bool]: ...

    def reattach(self, job_ids: Sequence[str] | set[str]) -> set[str]: ...

    def detached_jobs(self) -> set[str]:
        """Job ids with a runner or a placement group on the cluster, whoever started them."""
        ...

    def remove(self, job_id: str) -> bool:
        """Stop and release whatever the cluster holds for `job_id` (an orphan of a crash), found
        by name if need be; Released follows from poll(). Idempotent: False if nothing is there."""
        ...

    def shutdown(self) -> None: ...


def pg_name(job_id: str) -> str:
    return f"neocloud-{job_id}"


def runner_name(job_id: str, rank: int) -> str:
    return f"neocloud-{job_id}-{rank}"
