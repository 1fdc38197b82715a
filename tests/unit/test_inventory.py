from __future__ import annotations

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.inventory import node_views, processes_gone
from neocloud.scheduler.liveness import AGENT_LOST_AFTER_S, Liveness

T0_US = 1_800_000_000_000_000


def fleet_with(*nodes: str) -> tuple[Fleet, dict[str, SimBackend]]:
    fleet = Fleet()
    backends = {}
    for node_id in nodes:
        backend = SimBackend(node_id, 4, load=0.5, clock_us=lambda: T0_US)
        node = fleet.register(hello(node_id, 1, backend.inventory(), "sim").hello, T0_US)
        node.connected = True
        batch = build_batch(node_id, backend.inventory(), [backend.read(True)], T0_US)
        batch.seq = 1
        fleet.apply_batch(node, batch, T0_US)
        backends[node_id] = backend
    return fleet, backends


def test_views_exclude_unhealthy_awaiting_clean_and_dead_ray_nodes() -> None:
    fleet, backends = fleet_with("n1", "n2", "n3")
    uuids = [g.uuid for g in backends["n1"].inventory()]
    fleet.nodes["n1"].gpus[uuids[0]].unhealthy_reason = "XID 79"
    views = {v.node_id: v for v in node_views(fleet, T0_US / 1e6, {"n1", "n2"}, {"n2"}, {uuids[1]})}
    assert views["n1"].placeable == frozenset(uuids[2:])
    assert views["n1"].gpus == tuple(uuids) and views["n1"].gpu_model == "NVIDIA H200"
    assert 4 * 300 < views["n1"].power_draw_w < 4 * 450
    assert views["n2"].cordoned and len(views["n2"].placeable) == 4
    assert views["n3"].placeable == frozenset()  # no Ray worker on it


def test_a_lost_agent_makes_its_node_unplaceable_but_a_short_restart_does_not() -> None:
    fleet, _ = fleet_with("n1")
    fleet.nodes["n1"].connected = False
    now = T0_US / 1e6
    assert len(node_views(fleet, now + 5, None, (), ())[0].placeable) == 4
    assert node_views(fleet, now + AGENT_LOST_AFTER_S + 1, None, (), ())[0].placeable == frozenset()


def test_a_node_within_a_restart_grace_keeps_its_work_but_takes_nothing_new() -> None:
    fleet, _ = fleet_with("n1")
    fleet.nodes["n1"].connected = False
    restart = T0_US / 1e6 + 600
    liveness = Liveness.after_restart(T0_US / 1e6, restart)
    (view,) = node_views(fleet, restart + AGENT_LOST_AFTER_S + 1, None, (), (), liveness)
    assert len(view.placeable) == 4 and view.cordoned  # held GPUs stay placeable: no preemption
    (view,) = node_views(fleet, restart + liveness.grace_s + 1, None, (), (), liveness)
    assert view.placeable == frozenset() and not view.cordoned


def test_processes_gone_needs_a_fresh_sample_without_the_pids() -> None:
    fleet, backends = fleet_with("n1")
    backend = backends["n1"]
    uuids = [g.uuid for g in backend.inventory()]
    sim_pid = 10_000  # the sim's process on GPU 0
    assert not processes_gone(fleet, uuids[:1], {sim_pid}, T0_US - 1)
    assert not processes_gone(fleet, uuids[:1], {123}, T0_US)  # no sample after the release yet
    assert processes_gone(fleet, uuids[:1], {123}, T0_US - 1)
