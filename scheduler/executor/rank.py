"""What a runner reports about its rank, and what it may hand to anyone on Ray.

Plain data, no Ray: the executor, the discovery of detached runners and the tracking
of ranks read `RankStatus`; the runner builds it with `map_gpus` and `public_spec`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from neocloud.scheduler.executor.types import ExecJob

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankStatus:
    """A runner's view of its rank; `version` grows with every change worth an event."""

    job: ExecJob
    rank: int
    world_size: int
    node_id: str
    ray_node_id: str
    node_ip: str
    version: int
    log_path: str
    gpu_indices: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    pid: int | None = None
    pids: tuple[int, ...] = ()
    pid_namespace: int = 0  # the inode of the PID namespace `pids` are in (0: unknown)
    started_at: float | None = None
    exit_code: int | None = None
    end_reason: str | None = None
    ended_at: float | None = None
    last_checkpoint_at: float | None = None
    stopping: str | None = None  # the reason of a stop in progress
    sandbox: str = ""  # what the rank runs in (sandbox.Proof as JSON, or why it has none); "" not a tenant's
    watchdog_failure: str | None = None  # why the watchdog failed (the rank was then stopped)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


def map_gpus(ray_ids: Sequence[int | str], inventory: Sequence[str]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Ray's GPU ids for this worker → (indices, UUIDs from the node's inventory).

    Ray gives indices, or whatever the node's CUDA_VISIBLE_DEVICES listed when
    `ray start` ran (possibly UUIDs); either way the truth is reported.
    """
    indices: list[int] = []
    uuids: list[str] = []
    for rid in ray_ids:
        text = str(rid)
        if text.isdigit():
            idx = int(text)
            indices.append(idx)
            if idx < len(inventory):
                uuids.append(inventory[idx])
        elif text in inventory:
            indices.append(inventory.index(text))
            uuids.append(text)
        else:
            logger.warning("GPU id %r is neither an index nor in the node's inventory", text)
    return tuple(indices), tuple(uuids)


def public_spec(job: ExecJob) -> ExecJob:
    """The spec as a runner hands it to anyone on Ray: no env (secrets travel there), no private
    Ray token and no arguments, only what the executor needs to re-attach (id, grace, runtime, resources)."""
    command = None if job.command is None else job.command[:1]
    return dataclasses.replace(job, env={}, command=command, ray_token="")
