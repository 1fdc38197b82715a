"""Which Ray nodes can sandbox tenant ranks: each node's own probe (sandbox.probe),
run once per Ray node as a zero-CPU task pinned to it, read by the executor.

A node is unsandboxed until its probe answers yes; tenant work then goes only to
nodes that answered yes (NodeView.sandboxed), unless the operator passed
--allow-unsandboxed-tenants.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.executor.types import RayNodeInfo

logger = logging.getLogger(__name__)


def _probe() -> tuple[str, ...]:
    """On the node: what the full sandbox lacks there (empty: it enforces it all)."""
    return sandbox.node_capabilities().missing


_probe_task: Any = ray.remote(num_cpus=0, max_retries=0)(_probe)


class NodeProbes:
    """Probe results per Ray node id; not thread-safe (the executor holds its lock)."""

    def __init__(self, allow_unsandboxed_tenants: bool = False) -> None:
        self.allow = allow_unsandboxed_tenants
        self._missing: dict[str, tuple[str, ...]] = {}
        self._pending: dict[str, Any] = {}  # ray node id -> the probe's object ref

    def mark(self, nodes: dict[str, RayNodeInfo]) -> dict[str, RayNodeInfo]:
        """`nodes` with `sandboxed` set from the probes (asked for, once, for each new live node)."""
        self._collect()
        out = {}
        for node_id, info in nodes.items():
            rid = info.ray_node_id
            if info.alive and rid not in self._missing and rid not in self._pending:
                strategy = NodeAffinitySchedulingStrategy(node_id=rid, soft=False)
                self._pending[rid] = _probe_task.options(scheduling_strategy=strategy).remote()
            missing = self._missing.get(rid)
            ok = missing is not None and not missing
            out[node_id] = dataclasses.replace(info, sandboxed=ok or self.allow)
        return out

    def _collect(self) -> None:
        if not self._pending:
            return
        ready, _ = ray.wait(list(self._pending.values()), num_returns=len(self._pending), timeout=0)
        for rid, ref in list(self._pending.items()):
            if ref not in ready:
                continue
            del self._pending[rid]
            try:
                missing = tuple(ray.get(ref))
            except Exception as e:  # noqa: BLE001 - a node that cannot even answer is not sandboxed
                missing = (f"probe failed: {type(e).__name__}",)
            self._missing[rid] = missing
            if missing:
                logger.warning(
                    "Ray node %s cannot sandbox tenant ranks (%s): %s",
                    rid,
                    ", ".join(missing),
                    "tenants allowed there by --allow-unsandboxed-tenants" if self.allow else "internal work only",
                )
