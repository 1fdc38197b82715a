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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from neocloud.scheduler.executor import sandbox

CHECK_S = 10.0
RESERVE_FRACTION = 0.1  # of the filesystem, kept for the node itself (the agent's spool, logs)


@dataclass(frozen=True, slots=True)
class DiskQuota:
    bytes: int
    files: int  # entries (files, directories, links); 0: not limited (the filesystem counts no inodes)


def default_quota(fs: os.statvfs_result, rank_gpus: int, node_gpus: int) -> DiskQuota:
    """A rank's share of its job directory's filesystem by GPUs, as its memory and CPUs are of the node
    (the whole of it, less the reserve, where the GPUs are not known)."""
    share, whole = sandbox.gpu_share(rank_gpus, node_gpus)
    usable = 1.0 - RESERVE_FRACTION
    return DiskQuota(
        bytes=int(fs.f_blocks * fs.f_frsize * usable) * share // whole,
        files=int(fs.f_files * usable) * share // whole,
    )


class Unmeasurable(OSError):
    """The directory cannot be walked (a path past PATH_MAX, a permission the job took away): a job could
    hide any amount there, so the rank is treated as over its quota."""


def measure(root: Path, quota: DiskQuota, held: int = 0) -> tuple[int, int]:
    """(bytes allocated, entries) under `root` plus `held` bytes (deleted files the rank keeps open),
    stopping as soon as either passes `quota`: a job with millions of files costs the runner one quota's
    worth of walking, not all of them. Entries that vanish meanwhile are skipped; nothing is followed out
    of `root`; any other error raises Unmeasurable."""
    used, entries = held, 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    used += st.st_blocks * 512
                    entries += 1
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    if over(quota, used, entries):
                        return used, entries
        except (FileNotFoundError, NotADirectoryError):  # removed or replaced meanwhile
            continue
        except OSError as e:
            raise Unmeasurable(e.errno, f"its job directory cannot be measured: {e.strerror}") from e
    return used, entries


def held_deleted(pids: Iterable[int], device: int, proc_root: Path = Path("/proc")) -> int:
    """Bytes of the deleted files on `device` (the job directory's filesystem) that `pids` keep open:
    unlinked, they are in no directory a walk sees, yet they fill the disk all the same. Files of other
    filesystems (the sandbox's /tmp is memory, charged to the rank's cgroup) do not count."""
    seen: set[int] = set()
    total = 0
    for pid in pids:
        fds = proc_root / str(pid) / "fd"
        try:
            names = os.listdir(fds)
        except OSError:  # gone meanwhile
            continue
        for name in names:
            try:
                if not os.readlink(fds / name).endswith(" (deleted)"):
                    continue
                st = os.stat(fds / name)  # the open file itself, through the fd's magic link
            except OSError:
                continue
            if st.st_dev == device and stat.S_ISREG(st.st_mode) and st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def over(quota: DiskQuota, used: int, entries: int) -> str | None:
    """Why `used` bytes in `entries` entries pass `quota`, or None."""
    if used > quota.bytes:
        return f"its job directory holds over {used} bytes, past its disk quota of {quota.bytes}"
    if quota.files and entries > quota.files:
        return f"its job directory holds over {entries} files, past its quota of {quota.files}"
    return None
