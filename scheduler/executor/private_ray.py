"""`submit --ray`: a tenant's program that itself uses Ray (Ray Train, Ray Data) gets a Ray of its
own, spanning its ranks, never the site's cluster.

Each rank's sandbox runs ray_boot.py before the job: rank 0 starts a head on the gang's master port
and runs the command as the driver; the other ranks join as worker nodes. The cluster has a token of
its own, made by the executor for this run of the job and handed to the ranks in RAY_AUTH_TOKEN:
the site's token never enters a sandbox, and the job's token opens nothing but its own cluster.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# Ray needs at least this much for its object store; below it the rank gets Ray's defaults.
MIN_OBJECT_STORE_BYTES = 80 << 20
OBJECT_STORE_SHARE = 0.3  # of the rank's memory, as Ray's own default takes of a node's


@dataclass(frozen=True, slots=True)
class PrivateNode:
    """One rank's node of the job's private Ray."""

    job_id: str
    rank: int
    world_size: int
    node_ip: str  # this rank's node, as the site's Ray knows it (the network is shared)
    head: str  # "ip:port" of rank 0's head: the gang's master address
    gpus: int
    cpus: int  # the rank's CPU limit: inside the sandbox Ray cannot read its cgroup
    memory_bytes: int = 0  # the rank's memory limit (0: unknown, Ray sizes itself)

    def settings(self) -> dict[str, object]:
        """What ray_boot.py reads: the object store takes a share of the rank's memory, Ray's
        scheduling memory the rest (Ray would otherwise size both from the host's memory)."""
        store = int(self.memory_bytes * OBJECT_STORE_SHARE)
        if store < MIN_OBJECT_STORE_BYTES:
            store = 0
        node = asdict(self)
        # Short (Ray's socket paths must fit 107 bytes) and the rank's own even where it runs unsandboxed
        # (the lab's work on a node that cannot sandbox), beside the site's /tmp/ray.
        name = hashlib.sha256(self.job_id.encode()).hexdigest()[:12]
        node.update(
            temp_dir=f"/tmp/ray-{name}-{self.rank}",
            port=int(self.head.rpartition(":")[2]),
            object_store_bytes=store,
            memory_bytes=self.memory_bytes - store if store else 0,
        )
        return node


def new_token() -> str:
    """A token for one run of one job's private Ray."""
    return secrets.token_hex(32)


def boot_argv(argv: Sequence[str], node: PrivateNode, python: str = sys.executable) -> list[str]:
    """`argv` wrapped so that the rank first becomes its node of the private Ray."""
    return [python, "-I", "-c", _boot_source(), json.dumps(node.settings(), sort_keys=True), "--", *argv]


def env(token: str, head: str) -> dict[str, str]:
    """The job's view of its Ray: `ray.init()` in the driver finds it with no argument."""
    return {
        "RAY_ADDRESS": head,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
    }


@functools.cache
def _boot_source() -> str:
    return (Path(__file__).parent / "ray_boot.py").read_text()
