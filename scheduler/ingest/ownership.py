"""Moving a GPU to another node while ingest runs (`neocloud admin node move-gpu`).

The store and the live fleet change together, or the fleet would write the old
owner back at its next commit and keep refusing the new one. Both nodes must be
disconnected: the old one's stream still reports the GPU as its own, and a
node's inventory comes only from its Hello (the new node names the GPU in the
Hello it sends when it reconnects, which is then accepted).
"""

from __future__ import annotations

import logging

from neocloud.domain.errors import FailedPreconditionError
from neocloud.domain.fleet import EnergyAccumulator
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.scheduler.store.admin import AdminStore, GpuMove

logger = logging.getLogger(__name__)


def _refuse_if_connected(telemetry: TelemetryService, uuid: str, to_node: str) -> None:
    owner = telemetry.fleet.gpu_owner.get(uuid)
    for node, why in (
        (owner, "it still reports the GPU as its own"),
        (to_node, "its inventory changes only with its next Hello"),
    ):
        if node is not None and node in telemetry.sessions:
            raise FailedPreconditionError(
                f"node {node} is connected ({why}): stop its agent, move the GPU, then start the agent"
            )


async def move_gpu(
    telemetry: TelemetryService, store: AdminStore, uuid: str, to_node: str, reason: str, actor: str, now: float
) -> GpuMove:
    _refuse_if_connected(telemetry, uuid, to_node)
    # Everything the old owner sent is in the store, and no commit of it is in flight.
    await telemetry.commit()
    _refuse_if_connected(telemetry, uuid, to_node)  # a Hello may have come in meanwhile
    # No await from here on, so no Hello, batch or commit comes between the store's change and
    # the fleet's. The one small transaction blocks the event loop briefly: an operator's action.
    moved = store.move_gpu(uuid, to_node, reason, actor, now)
    fleet = telemetry.fleet
    old = fleet.nodes.get(moved.from_node)
    gpu = old.gpus.pop(uuid, None) if old is not None else None
    new = fleet.nodes.get(moved.to_node)
    if gpu is not None and new is not None:
        # Afresh, as the store has it: no counter baseline, a total of 0, and samples not checked
        # against the old host's clock.
        gpu.node_id, gpu.energy = moved.to_node, EnergyAccumulator()
        gpu.last_sample_us, gpu.last_series = 0, None
        new.gpus[uuid] = gpu
    # Everything it earned is attributed (the store checked); its metering starts again with the total.
    fleet.attributor.forget(uuid)
    fleet.gpu_owner[uuid] = moved.to_node
    return moved
