"""The restart grace (scheduler/liveness.py): a scheduler back from downtime judges
no node lost before the agents had time to reconnect, disturbs nothing running,
and bills no job for the downtime. Fake clock, real store and policy, the
in-memory executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.agent.convert import build_batch
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.liveness import (
    AGENT_LOST_AFTER_S,
    RESTART_GRACE_CAP_S,
    Heartbeat,
    Liveness,
    last_sign_of_life,
    restart_grace_s,
)
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store.records import JobSpec, JobState
from tests.unit.control.test_controller import Rig

DOWN_S = 300.0  # five minutes of control-plane downtime


def test_the_grace_grows_with_the_downtime_up_to_a_cap() -> None:
    assert restart_grace_s(0.0) == AGENT_LOST_AFTER_S
    assert restart_grace_s(-5.0) == AGENT_LOST_AFTER_S  # a clock step back is no downtime
    assert restart_grace_s(DOWN_S) == AGENT_LOST_AFTER_S + DOWN_S
    assert restart_grace_s(86_400.0) == AGENT_LOST_AFTER_S + RESTART_GRACE_CAP_S


def test_after_five_minutes_down_no_node_is_lost_until_its_grace_ends(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = rig.fleet.nodes["n1"]
    node.connected = False
    crash = rig.clock.now
    restart = crash + DOWN_S
    liveness = Liveness.after_restart(crash, restart)
    assert liveness.grace_s == AGENT_LOST_AFTER_S + DOWN_S
    assert Liveness().lost(node, restart)  # the rule without a grace: lost at once
    for t in (restart, restart + AGENT_LOST_AFTER_S + 1, restart + liveness.grace_s - 1):
        assert not liveness.lost(node, t) and liveness.awaiting(node, t)
    end = restart + liveness.grace_s + 1
    assert liveness.lost(node, end) and not liveness.awaiting(node, end)


def test_a_node_that_reconnects_ends_its_grace(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = rig.fleet.nodes["n1"]
    restart = rig.clock.now + DOWN_S
    liveness = Liveness.after_restart(rig.clock.now, restart)
    node.connected = True
    node.last_seen_us = int((restart + 10) * 1e6)
    assert not liveness.awaiting(node, restart + 10)
    node.connected = False  # silent again: the plain rule, not the long grace
    assert not liveness.awaiting(node, restart + 20) and not liveness.lost(node, restart + 20)
    assert liveness.lost(node, restart + 10 + AGENT_LOST_AFTER_S + 1)


def test_the_heartbeat_is_throttled_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db.heartbeat"
    beat = Heartbeat(path, every_s=5.0)
    assert beat.last() is None  # a first start
    beat.beat(1000.0)
    beat.beat(1004.0)  # within the interval: not written
    assert beat.last() == 1000.0
    beat.beat(1005.0)
    assert beat.last() == 1005.0
    path.write_text("garbage")
    assert beat.last() is None


def test_the_last_sign_of_life_is_the_later_of_heartbeat_and_telemetry(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    nodes = list(rig.fleet.nodes.values())
    seen = rig.clock.now
    beat = Heartbeat(tmp_path / "hb")
    assert last_sign_of_life(None, []) is None
    assert last_sign_of_life(beat, nodes) == pytest.approx(seen)  # a store from before heartbeats
    beat.beat(seen + 30)
    assert last_sign_of_life(beat, nodes) == seen + 30


def report(rig: Rig, node_id: str) -> None:
    """One node's agent sends a batch stamped now (the others stay silent)."""
    rig.seq += 1
    backend = rig.backends[node_id]
    at_us = int(rig.clock.now * 1e6)
    batch = build_batch(node_id, backend.inventory(), [backend.read(True)], at_us)
    batch.seq = rig.seq
    rig.fleet.apply_batch(rig.fleet.nodes[node_id], batch, at_us)


def restarted(rig: Rig, tmp_path: Path, crash: float) -> Controller:
    """The scheduler died at `crash` (its last heartbeat) and starts now, every agent silent."""
    beat = Heartbeat(tmp_path / "s.db.heartbeat")
    beat.beat(crash)
    for node in rig.fleet.nodes.values():
        node.connected = False
    controller = Controller(rig.store, rig.fleet, rig.executor, clock=rig.clock, heartbeat=Heartbeat(beat.path))
    controller.recover()
    return controller


def test_a_restart_after_downtime_preempts_nothing_and_places_nothing_on_silent_nodes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    contract = rig.store.create_contract("acme", rig.clock.now - 1, rig.clock.now + 86_400, gpus=8).contract_id
    spec = JobSpec("acme", "reserved", JobClass.RESERVED, 8, 8, command=("true",), contract_id=contract)
    reserved = rig.store.submit(spec).job_id
    rig.step()
    assert rig.store.get(reserved).state is JobState.RUNNING
    crash = rig.clock.now
    rig.clock.now += DOWN_S
    controller = restarted(rig, tmp_path, crash)
    spot = rig.submit("acme", JobClass.SPOT, 8, rid="spot")
    for _ in range(5):  # old code: the first step preempted the reserved job, its node "lost" 300 s ago
        rig.clock.now += 10
        controller.step()
    assert rig.store.get(reserved).state is JobState.RUNNING
    assert rig.executor.jobs[reserved].signals == []
    assert rig.store.get(spot).state is JobState.QUEUED  # nothing new on a node not back yet
    assert Heartbeat(tmp_path / "s.db.heartbeat").last() == rig.clock.now  # the new run beats
    # n2 reconnects: its grace ends, the waiting job goes there.
    rig.fleet.nodes["n2"].connected = True
    report(rig, "n2")
    controller.step()
    assert rig.store.get(spot).state is JobState.RUNNING
    assert {a.node_id for a in rig.store.allocations(spot)} == {"n2"}
    # n1 stays silent past its grace: lost now, its work is preempted.
    rig.clock.now = crash + DOWN_S + controller.liveness.grace_s + 1
    report(rig, "n2")
    controller.step()
    assert rig.executor.jobs[reserved].signals and rig.executor.jobs[reserved].signals[0].startswith("preempt")


def test_a_job_gone_during_the_downtime_is_billed_up_to_the_last_heartbeat(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    job = rig.submit("acme", JobClass.SPOT, 8)
    rig.step()
    started = rig.store.allocations(job)[0].start
    crash = rig.clock.now + 20
    rig.executor.vanish(job)  # its runners died with the control plane
    rig.clock.now = crash + DOWN_S
    restarted(rig, tmp_path, crash)
    (allocation,) = rig.store.allocations(job)
    assert rig.store.get(job).state is JobState.QUEUED
    assert allocation.end == crash and allocation.end_reason == "lost"  # old code: crash + DOWN_S
    assert allocation.end - started == 20
