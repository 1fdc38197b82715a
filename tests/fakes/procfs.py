"""A procfs tree in a temporary folder with what agent/gpu/pidns.py reads:
`<root>/<pid>/ns/pid` as the link text the kernel gives ("pid:[<inode>]", a
dangling link here, as readlink sees it on a real /proc) and an NSpid: line
in `<root>/<pid>/status`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from neocloud.agent.gpu.pidns import INIT_PID_NAMESPACE

CONTAINER_NS = 4026532500  # a pod's PID namespace, as inodes go on a real node
NESTED_NS = 4026532600  # one a job made below its pod's (unshare -p)


def add_process(root: Path, name: str | int, namespace: int, nspid: Sequence[int]) -> None:
    """A process directory (`name` may be "self") in PID namespace `namespace`, NSpid `nspid`."""
    base = root / str(name)
    (base / "ns").mkdir(parents=True, exist_ok=True)
    os.symlink(f"pid:[{namespace}]", base / "ns" / "pid")
    words = "\t".join(str(p) for p in nspid)
    (base / "status").write_text(f"Name:\tpython\nPid:\t{nspid[0]}\nNSpid:\t{words}\nPPid:\t1\n")


def host_proc(root: Path, agent_ns: int = INIT_PID_NAMESPACE) -> Path:
    """An empty procfs whose `self` (the agent) is in PID namespace `agent_ns`."""
    root.mkdir(parents=True, exist_ok=True)
    add_process(root, "self", agent_ns, (1234,))
    return root
