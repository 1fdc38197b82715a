"""What a rank starts as: its environment, its limits, its argv (its private Ray's boot first, for
`--ray`) and where it runs: in the sandbox as its tenant's uid where this node enforces it. No Ray
and no threads here; the runner (runner.py) owns the process once it has started.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from neocloud.scheduler.executor import disk, private_ray, procs, sandbox
from neocloud.scheduler.executor.types import ExecJob

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankSetup:
    """A rank of a job on this node, and the files the runner keeps for it in its job directory."""

    job: ExecJob
    rank: int
    world_size: int
    node_ip: str
    cuda_visible: str  # Ray's GPU ids for the rank, as CUDA_VISIBLE_DEVICES
    gpu_indices: tuple[int, ...]
    node_gpus: int  # the node's GPUs (its inventory): a rank's default limits are a share of them
    job_dir: Path

    @property
    def log(self) -> Path:
        return self.job_dir / f"rank-{self.rank}.log"

    @property
    def control(self) -> Path:
        """Written by the runner, read by the job: a directory only the runner writes."""
        return self.job_dir / "control"

    @property
    def notice(self) -> str:
        return f"rank-{self.rank}.preempt"

    @property
    def warning(self) -> str:
        return f"rank-{self.rank}.reclaim-warning"

    @property
    def checkpoint(self) -> Path:
        """Written by the job; only its mtime is read."""
        return self.job_dir / f"rank-{self.rank}.checkpoint"

    @property
    def cwd(self) -> Path | None:
        """Where the command runs: its job directory if it shipped a workdir (else the runner's, as before)."""
        return self.job_dir if self.job.workdir_digest else None


@dataclass(frozen=True)
class Spawned:
    proc: subprocess.Popen[bytes]
    sandbox: str  # sandbox.Proof as JSON, or why there is none; "" for the lab's tooling
    disk: disk.DiskQuota | None  # the job directory's quota the runner enforces (None: the lab's tooling)


def environment(s: RankSetup, master: tuple[str, int]) -> dict[str, str]:
    job = s.job
    env = procs.base_env()
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's indices = NVML's = Ray's
    env.update(job.env)
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": s.cuda_visible,
            "NEOCLOUD_JOB_ID": job.job_id,
            "NEOCLOUD_RANK": str(s.rank),
            "NEOCLOUD_WORLD_SIZE": str(s.world_size),
            "NEOCLOUD_PREEMPT_NOTICE_FILE": str(s.control / s.notice),
            "NEOCLOUD_RECLAIM_WARNING_FILE": str(s.control / s.warning),
            "NEOCLOUD_CHECKPOINT_FILE": str(s.checkpoint),
        }
    )
    if s.world_size > 1:
        env["NEOCLOUD_MASTER_ADDR"], env["NEOCLOUD_MASTER_PORT"] = master[0], str(master[1])
    if job.ray:  # its own Ray on the master port, with its own token
        env.update(private_ray.env(job.ray_token, f"{master[0]}:{master[1]}"))
    return env


def limits(s: RankSetup) -> sandbox.Limits:
    """The rank's CPUs and memory: what its job asked for, else its GPUs' share of the node."""
    share = sandbox.default_limits(sandbox.mem_total_bytes(), os.cpu_count() or 1, len(s.gpu_indices), s.node_gpus)
    return sandbox.Limits(memory_bytes=s.job.memory_bytes or share.memory_bytes, cpus=s.job.cpus or share.cpus)


def spawn(s: RankSetup, argv: list[str], env: dict[str, str], master: tuple[str, int]) -> Spawned:
    """A rank runs in the sandbox as its tenant's uid where this node enforces it; elsewhere (the
    policy sends only internal work there, and tenants' only if the operator allowed it) unsandboxed,
    and its record says why. A job without a tenant is the lab's tooling (bench, tests): never sandboxed.
    Raises OSError or SandboxError if it cannot start."""
    job = s.job
    got = limits(s)
    if job.ray:
        argv = private_ray.boot_argv(argv, _private_node(s, got, master))
    if job.tenant is None:
        return Spawned(procs.spawn(argv, env, s.log, cwd=s.cwd), "", None)
    quota = disk.default_quota(os.statvfs(s.job_dir), len(s.gpu_indices), s.node_gpus)
    caps = sandbox.node_capabilities()
    if not caps.full:
        level = logging.INFO if job.internal else logging.WARNING  # internal work is expected here
        logger.log(level, "job %s rank %d runs UNSANDBOXED: %s", job.job_id, s.rank, caps.missing)
        unsandboxed = json.dumps({"unsandboxed": list(caps.missing)})
        return Spawned(procs.spawn(argv, env, s.log, cwd=s.cwd), unsandboxed, quota)
    spec = sandbox.SandboxSpec(
        job_id=job.job_id,
        rank=s.rank,
        tenant=job.tenant,
        uid_offset=job.uid_offset,
        job_dir=s.job_dir,
        gpu_indices=s.gpu_indices,
        cpus=got.cpus,
        memory_bytes=got.memory_bytes,
        disk_bytes=quota.bytes,
        disk_files=quota.files,
    )
    proc, proof = procs.spawn_sandboxed(argv, env, s.log, spec)
    return Spawned(proc, proof.to_json(), quota)


def _private_node(s: RankSetup, got: sandbox.Limits, master: tuple[str, int]) -> private_ray.PrivateNode:
    """This rank's node of the job's private Ray, advertising what the rank may use."""
    return private_ray.PrivateNode(
        job_id=s.job.job_id,
        rank=s.rank,
        world_size=s.world_size,
        node_ip=s.node_ip,
        head=f"{master[0]}:{master[1]}",
        gpus=len(s.gpu_indices),
        cpus=got.cpus,
        memory_bytes=got.memory_bytes,
    )
