"""A multi-node Ray cluster on one machine, for demos, benchmarks and tests:
a head without GPUs and one labelled worker node per neocloud node, each with
as many (fake) GPUs as asked. The same shape as a real cluster started with
`ray start --head --num-gpus=0` plus `ray start --labels=neocloud.io/node-id=<id>`
on every GPU node."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ray.cluster_utils import Cluster

from neocloud.scheduler.executor.types import NODE_LABEL, valid_node_id

logger = logging.getLogger(__name__)


class LocalCluster:
    def __init__(self, gpus_per_node: Mapping[str, int], cpus_per_node: int = 2, head_cpus: int = 1) -> None:
        for node_id in gpus_per_node:
            if not valid_node_id(node_id):
                raise ValueError(f"node id {node_id!r} cannot be a Ray node label value")
        self._cluster: Any = _start_head(head_cpus)
        self._nodes: dict[str, Any] = {}
        try:
            for node_id, gpus in gpus_per_node.items():
                self._nodes[node_id] = self._cluster.add_node(
                    num_cpus=cpus_per_node, num_gpus=gpus, labels={NODE_LABEL: node_id}
                )
        except BaseException:
            self._cluster.shutdown()
            raise
        logger.info("local Ray cluster at %s with nodes %s", self.address, dict(gpus_per_node))

    @property
    def address(self) -> str:
        return str(self._cluster.address)

    def remove_node(self, node_id: str) -> None:
        """Kill a worker node's raylet and workers, as a node failure would."""
        self._cluster.remove_node(self._nodes.pop(node_id))

    def shutdown(self) -> None:
        self._cluster.shutdown()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def _start_head(cpus: int) -> Any:
    """The head node. Ray's GCS now and then never reports its port on a loaded machine
    (RuntimeError "Timed out waiting for file ..."); one more try is then worth it."""
    args = {"num_cpus": cpus, "num_gpus": 0}
    try:
        return Cluster(initialize_head=True, head_node_args=args)
    except RuntimeError as e:
        if "Timed out waiting" not in str(e):
            raise
        logger.warning("the local Ray head did not start (%s); trying again", e)
    return Cluster(initialize_head=True, head_node_args=args)
