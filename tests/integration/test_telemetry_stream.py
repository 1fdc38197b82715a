"""Agent -> scheduler over real gRPC on loopback: nothing lost, nothing twice."""

from __future__ import annotations

from collections.abc import Callable

from neocloud.agent.gpu.replay import ReplayBackend
from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.domain.trace import load_trace
from neocloud.scheduler.server import BackgroundScheduler
from tests.helpers import H200_TRACE, wait_until
from tests.proxy import CuttableProxy

SPEED = 8.0  # the 34 s trace in ~4 s


def scheduler_energy_mj(sched: BackgroundScheduler, node_id: str = "node-1") -> dict[str, int]:
    node = sched.scheduler.telemetry.fleet.nodes[node_id]
    return {uuid: gpu.energy.total_mj for uuid, gpu in node.gpus.items()}


def replay_backend() -> tuple[ReplayBackend, int, str]:
    trace = load_trace(H200_TRACE)
    return ReplayBackend([trace], speed=SPEED), trace.counter_delta_mj, trace.info.uuid


def wait_replayed(agent: Agent, backend: ReplayBackend) -> None:
    wait_until(lambda: backend.finished, 60, "the replay to finish")
    agent.sampler.stop()
    wait_until(lambda: agent.spool.stats().batches == 0, 30, "every batch to be acknowledged")


def test_sim_agent_streams_eight_gpus(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory()
    backend = SimBackend("node-1", 8, load=0.5)
    agent = agent_factory(sched.port, backend=backend)
    wait_until(
        lambda: len(agent.sampler.latest.energy) == 8 and agent.spool.stats().batches == 0 and agent.spool.last_seq > 5
    )
    node = sched.scheduler.telemetry.fleet.nodes["node-1"]
    assert node.connected and node.backend == "sim" and len(node.gpus) == 8
    wait_until(lambda: all(g.last_series is not None for g in node.gpus.values()), what="samples of every GPU")
    for gpu in node.gpus.values():
        assert gpu.last_series is not None
        assert 300 < gpu.last_series.power_mw[-1] / 1e3 < 450  # half load on an H200
        assert gpu.last_series.gpu_util_percent[-1] == 50
    assert node.clock_offset_s is not None and abs(node.clock_offset_s) < 1.0


def test_replayed_h200_energy_equals_counter_delta(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory()
    backend, delta_mj, uuid = replay_backend()
    agent = agent_factory(sched.port, backend=backend)
    wait_replayed(agent, backend)
    assert scheduler_energy_mj(sched) == {uuid: delta_mj}
    assert sched.scheduler.telemetry.fleet.counters.batches_duplicate == 0


def test_cut_connection_loses_nothing(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory()
    proxy = CuttableProxy(sched.port)
    backend, delta_mj, uuid = replay_backend()
    agent = agent_factory(proxy.port, backend=backend)
    for _ in range(3):
        seen = agent.spool.last_seq
        wait_until(lambda seen=seen: agent.spool.last_seq > seen + 5, what="more batches")
        proxy.cut()
    wait_replayed(agent, backend)
    assert proxy.connections >= 2
    assert scheduler_energy_mj(sched) == {uuid: delta_mj}
    proxy.close()


def test_agent_restart_resends_what_was_never_acked(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory()
    backend, delta_mj, uuid = replay_backend()
    first = agent_factory(sched.port, backend=backend)
    wait_until(lambda: first.spool.last_seq > 10, what="batches")
    # Stop streaming first so batches pile up unacknowledged, then stop the agent.
    first.stream.stop()
    wait_until(lambda: first.spool.last_seq > 20, what="unacknowledged batches")
    first.stop()
    second = agent_factory(sched.port, backend=backend)
    assert second.spool.epoch == first.spool.epoch
    wait_replayed(second, backend)
    assert scheduler_energy_mj(sched) == {uuid: delta_mj}


def test_scheduler_restart_loses_and_duplicates_nothing(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory()
    port = sched.port
    backend, delta_mj, uuid = replay_backend()
    agent = agent_factory(port, backend=backend)
    wait_until(lambda: sched.scheduler.telemetry.fleet.counters.energy_readings > 5, what="energy readings")
    sched.stop()
    wait_until(lambda: agent.spool.stats().batches > 3, what="batches spooled while the scheduler is down")
    restarted = scheduler_factory(port=port)
    wait_replayed(agent, backend)
    assert scheduler_energy_mj(restarted) == {uuid: delta_mj}
