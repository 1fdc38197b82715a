"""Refuse at the door a job that can never fit this fleet (issue 12 item 4; Kueue's admission checks).

A job can never fit when the fleet, whole, healthy and idle, could not hold it:
no node of the GPU model it names, more GPUs than the fleet has of that model,
or a gang shape (n nodes of g GPUs) that fewer than n nodes can hold. Such a
Submit is refused with FAILED_PRECONDITION naming the limit ("asks for 4096
NVIDIA H200 GPUs; the fleet has 32"). Everything the fleet could hold later
(GPUs busy, unhealthy, cordoned, a node disconnected) is accepted and waits
with the policy's reason. The fleet counts every node that has registered with
its GPUs, connected or not: a node down for maintenance is still the lab's.

While no node has registered yet (a fresh site, or a scheduler started before
its agents) nothing is refused: the job waits, its message saying there are
no GPUs of its model yet, since the fleet being empty says nothing about what
it will hold.

The inventory is summarised per GPU model (node sizes, largest first) and kept
for REFRESH_S, or until the number of nodes changes: a Submit then costs a
dictionary lookup, not a walk over tens of thousands of nodes.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from neocloud.domain.errors import FailedPreconditionError
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.store.records import JobSpec

logger = logging.getLogger(__name__)

REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class Inventory:
    """Node sizes per GPU model, smallest first (a check is a bisection, not a walk over the nodes)."""

    sizes: dict[str, list[int]]
    totals: dict[str, int]

    @staticmethod
    def of(fleet: Fleet) -> Inventory:
        sizes: dict[str, list[int]] = {}
        for node in list(fleet.nodes.values()):  # (a copy: ingest changes the dict on the event loop)
            gpus = node.gpus
            if gpus:  # (a node's GPUs are all one model: any of them names it, at no cost per GPU)
                model = next(iter(gpus.values())).model
                sizes.setdefault(model, []).append(len(gpus))
        return Inventory.from_sizes(sizes)

    @staticmethod
    def from_sizes(sizes: dict[str, list[int]]) -> Inventory:
        return Inventory({m: sorted(lst) for m, lst in sizes.items()}, {m: sum(lst) for m, lst in sizes.items()})

    def never_fits(self, gpus: int, per_node: int, model: str | None) -> str | None:
        """Why a job of `gpus` GPUs at `per_node` per node (of `model`, or any one model) can never
        run on this fleet; None if it could (or the fleet is empty)."""
        if not self.sizes or gpus <= 0 or per_node <= 0 or gpus % per_node:
            return None  # (a shape that is no shape at all is the store's to refuse, as INVALID_ARGUMENT)
        if model is not None and model not in self.sizes:
            return f"asks for {model} GPUs; the fleet has none (it has {', '.join(sorted(self.sizes))})"
        models = [model] if model is not None else sorted(self.sizes)
        why = [self._why(m, gpus, per_node) for m in models]
        if None in why:
            return None
        if len(models) == 1:
            return why[0]
        # Any model would do: name the one that comes closest, by GPUs.
        best = max(models, key=self.totals.__getitem__)
        return f"{why[models.index(best)]} (the model with the most GPUs; a job runs on one model)"

    def _why(self, model: str, gpus: int, per_node: int) -> str | None:
        sizes = self.sizes[model]
        total = self.totals[model]
        if gpus > total:
            return f"asks for {gpus} {model} GPUs; the fleet has {total}"
        nodes = gpus // per_node
        able = len(sizes) - bisect_left(sizes, per_node)
        if able < nodes:
            return (
                f"asks for {_nodes(nodes)} with {per_node} {model} GPUs each; the fleet has {_nodes(able)} "
                f"with {per_node} or more (largest: {sizes[-1]} GPUs)"
            )
        return None


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


class Admission:
    """The check Submit makes against the fleet the scheduler knows (None: no fleet, nothing refused)."""

    def __init__(self, fleet: Fleet | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._fleet = fleet
        self._clock = clock
        self._inventory = Inventory({}, {})
        self._nodes = -1
        self._until = 0.0

    def inventory(self) -> Inventory:
        fleet = self._fleet
        if fleet is None:
            return self._inventory
        now = self._clock()
        if now >= self._until or len(fleet.nodes) != self._nodes:
            self._nodes = len(fleet.nodes)
            self._inventory = Inventory.of(fleet)
            self._until = now + REFRESH_S
        return self._inventory

    def check(self, spec: JobSpec) -> None:
        """FailedPreconditionError if the job can never fit the fleet."""
        why = self.inventory().never_fits(spec.gpus, spec.gpus_per_node, spec.gpu_model)
        if why is not None:
            raise FailedPreconditionError(f"{why}: this job can never run here")
