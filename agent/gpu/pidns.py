"""Who a GPU process is across PID namespaces, read from procfs.

NVML reports pids in the host's (initial) PID namespace; a runner inside a
container sees the same process under another pid. So each GPU process is
reported with the inode of its own PID namespace (/proc/<pid>/ns/pid) and its
NSpid chain (its pid in every namespace from the host's down to its own), and
the scheduler matches what the runner saw against that (inventory.py).

The NSpid line is world-readable; the namespace link needs ptrace access (root
or CAP_SYS_PTRACE), so an unprivileged agent sends the chain alone (namespace
0), which the scheduler matches at every level. No chain at all (the process is
gone, or no NSpid line) is no identity, which counts as "could be the job's"
(fail closed). `proc_root` is injectable so tests point it at a fixture tree,
as prometheus_client's ProcessCollector does.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from neocloud.domain.gpu import MAX_NAMESPACE_PIDS, GpuProcess

logger = logging.getLogger(__name__)

# PROC_PID_INIT_INO (include/linux/proc_ns.h): the kernel's fixed inode of the
# initial PID namespace, the one whose pids NVML reports.
INIT_PID_NAMESPACE = 0xEFFFFFFC

_NS_LINK = re.compile(r"pid:\[(\d+)\]")


def namespace_of(link: str) -> int:
    """The inode in a /proc/<pid>/ns/pid link text ("pid:[4026531836]"), 0 if it is not one."""
    m = _NS_LINK.fullmatch(link)
    return int(m.group(1)) if m else 0


def nspid_chain(status: bytes) -> tuple[int, ...]:
    """The NSpid: line of a /proc/<pid>/status, outermost first; () if absent (kernels before 4.1)."""
    for line in status.splitlines():
        if line.startswith(b"NSpid:"):
            words = line.split()[1:]
            if 0 < len(words) <= MAX_NAMESPACE_PIDS and all(w.isdigit() for w in words):
                return tuple(int(w) for w in words)
            return ()
    return ()


class ProcPids:
    """Reads PID-namespace identities of processes under one procfs root."""

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self._root = Path(proc_root)

    def own_namespace(self) -> int:
        """The PID namespace this procfs shows `self` in (0 if unreadable)."""
        try:
            return namespace_of(os.readlink(self._root / "self" / "ns" / "pid"))
        except OSError:
            return 0

    def identity(self, pid: int) -> tuple[int, tuple[int, ...]]:
        """(namespace inode or 0, NSpid chain) of `pid` as this procfs names it; (0, ())
        if the chain is unreadable.

        A chain whose first entry is not `pid` belongs to a procfs mounted in
        another namespace than the pids given, so it identifies nothing.
        """
        base = self._root / str(pid)
        try:
            chain = nspid_chain((base / "status").read_bytes())
        except OSError:  # gone since NVML listed it
            return 0, ()
        if not chain or chain[0] != pid:
            return 0, ()
        try:
            return namespace_of(os.readlink(base / "ns" / "pid")), chain
        except OSError:  # another user's, and no ptrace access to it
            return 0, chain

    def annotate(self, processes: Iterable[GpuProcess]) -> tuple[GpuProcess, ...]:
        """`processes` with their namespace identity filled in where it can be read."""
        out = []
        for p in processes:
            namespace, chain = self.identity(p.pid)
            out.append(replace(p, pid_namespace=namespace, namespace_pids=chain) if chain else p)
        return tuple(out)


def host_pids(proc_root: str | Path = "/proc") -> ProcPids | None:
    """A reader for NVML's pids, which are the host's: None where this procfs is not
    the host's PID namespace (it would name other processes by those numbers, and
    NVML lists only the processes of the caller's namespace there)."""
    pids = ProcPids(proc_root)
    own = pids.own_namespace()
    if own == INIT_PID_NAMESPACE:
        return pids
    logger.warning(
        "the agent is not in the host's PID namespace (it is in %d; run it with hostPID): NVML hides other "
        "namespaces' processes from it, so every process list is sent as incomplete and no finished job's GPU "
        "is freed",
        own,
    )
    return None
