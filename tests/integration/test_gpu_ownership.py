"""Threat (e): a node reporting GPUs that belong to another node, even an offline one,
is refused before anything is applied; the owner's energy is untouched."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from neocloud.agent.convert import hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.server import BackgroundScheduler
from tests.integration.test_hostile_streams import EPOCH, RawStream, batch


def sim(node: str) -> SimBackend:
    ticks = iter(range(1, 10**9))
    return SimBackend(node, 2, load=0.5, clock_us=lambda: 1_800_000_000_000_000 + next(ticks) * 1_000_000)


def test_a_gpu_of_an_offline_node_cannot_be_claimed(scheduler_factory: Callable[..., BackgroundScheduler]) -> None:
    sched = scheduler_factory()
    fleet = sched.scheduler.telemetry.fleet
    owner = sim("node-x")
    stream = RawStream(sched.port)
    stream.send(hello("node-x", EPOCH, owner.inventory(), "sim"))
    assert stream.recv().ack.acked_seq == 0
    for seq in (1, 2):
        stream.send(batch(owner, seq))
    deadline = time.monotonic() + 10
    while stream.recv().ack.acked_seq < 2 and time.monotonic() < deadline:
        pass
    stream.close()
    energy = {u: g.energy.total_mj for u, g in fleet.nodes["node-x"].gpus.items()}
    assert all(v > 0 for v in energy.values())
    while "node-x" in sched.scheduler.telemetry.sessions and time.monotonic() < deadline:
        time.sleep(0.01)

    # node-y claims node-x's GPU 0 while node-x is offline.
    thief = sim("node-y")
    claim = hello("node-y", EPOCH, thief.inventory(), "sim")
    claim.hello.gpus[0].uuid = owner.inventory()[0].uuid
    stolen = RawStream(sched.port)
    stolen.send(claim)
    try:
        reply = stolen.recv()
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
    else:
        raise AssertionError(f"the claim was answered {reply}")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert owner.inventory()[0].uuid in details and "node-x" in details and "operator" in details
    assert "node-y" not in fleet.nodes
    assert fleet.gpu_owner[owner.inventory()[0].uuid] == "node-x"
    assert {u: g.energy.total_mj for u, g in fleet.nodes["node-x"].gpus.items()} == energy
    assert fleet.counters.gpu_claims_refused == 1
    stolen.close()
