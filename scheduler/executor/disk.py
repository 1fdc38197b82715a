"""A rank's disk quota: its job directory is the only host storage a sandboxed rank can write (its
/tmp is memory, charged to its cgroup), and one tenant filling the node's disk would stop every other
tenant's job and the agent's spool with it.

No kernel quota is assumed (an ext4 root without project quotas is the common GPU node), so the runner
measures the directory the way Kubernetes' kubelet measures a pod's ephemeral storage: every CHECK_S,
allocated blocks and entries, links never followed, and a rank past its quota is stopped. A job may
overshoot by what it writes between two checks; the system reserve absorbs that.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

CHECK_S = 10.0
RESERVE_FRACTION = 0.1  # of the filesystem, kept for the node itself (the agent's spool, logs)


@dataclass(frozen=True, slots=True)
class DiskQuota:
    bytes: int
    files: int  # entries (files, directories, links); 0: not limited (the filesystem counts no inodes)


def default_quota(fs: os.statvfs_result, rank_gpus: int, node_gpus: int) -> DiskQuota:
    """A rank's share of its job directory's filesystem by GPUs, as its memory and CPUs are of the node
    (the whole of it, less the reserve, where the GPUs are not known)."""
    share, whole = (min(rank_gpus, node_gpus), node_gpus) if rank_gpus > 0 and node_gpus > 0 else (1, 1)
    usable = 1.0 - RESERVE_FRACTION
    return DiskQuota(
        bytes=int(fs.f_blocks * fs.f_frsize * usable) * share // whole,
        files=int(fs.f_files * usable) * share // whole,
    )


def measure(root: Path, quota: DiskQuota) -> tuple[int, int]:
    """(bytes allocated, entries) under `root`, stopping as soon as either passes `quota`: a job with
    millions of files costs the runner one quota's worth of walking, not all of them. Entries that
    vanish meanwhile are skipped; nothing is followed out of `root`."""
    used = entries = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    used += st.st_blocks * 512
                    entries += 1
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    if over(quota, used, entries):
                        return used, entries
        except OSError:  # removed, or not a directory any more
            continue
    return used, entries


def over(quota: DiskQuota, used: int, entries: int) -> str | None:
    """Why `used` bytes in `entries` entries pass `quota`, or None."""
    if used > quota.bytes:
        return f"its job directory holds over {used} bytes, past its disk quota of {quota.bytes}"
    if quota.files and entries > quota.files:
        return f"its job directory holds over {entries} files, past its quota of {quota.files}"
    return None
