from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.sampler import Sampler
from neocloud.agent.spool import Spool
from neocloud.domain.gpu import HealthEvent, HealthKind, Reading
from neocloud.v1 import telemetry_pb2 as pb


def clock() -> object:
    ticks = iter(range(1, 10**9))
    return lambda: next(ticks) * 100_000


def test_batches_carry_every_gpu_and_energy_on_its_own_cadence(tmp_path: Path) -> None:
    backend = SimBackend("n1", 4, load=1.0, clock_us=clock())  # type: ignore[arg-type]
    sampler = Sampler("n1", backend, Spool(tmp_path / "s.db"), tick_s=1, energy_interval_s=3600, batch_ticks=3)
    for _ in range(6):
        sampler.tick()
    batches = [pb.Batch.FromString(d) for _, d in sampler.spool.pending(0, 10)]
    assert [b.seq for b in batches] == [1, 2]
    first = batches[0]
    assert [s.uuid for s in first.gpus] == [g.uuid for g in backend.inventory()]
    assert all(len(s.timestamp_us) == 3 and len(s.power_mw) == 3 for s in first.gpus)
    # Energy was due on the first tick only (interval one hour).
    assert [len(s.energy) for s in first.gpus] == [1, 1, 1, 1]
    assert all(len(s.energy) == 0 for s in batches[1].gpus)


def test_counter_going_backwards_is_flagged_once(tmp_path: Path) -> None:
    backend = SimBackend("n1", 2, load=0.5, clock_us=clock())  # type: ignore[arg-type]
    sampler = Sampler("n1", backend, Spool(tmp_path / "s.db"), tick_s=1, energy_interval_s=1e-9, batch_ticks=1)
    sampler.tick()
    backend.reset_energy_counter(1)
    sampler.tick()
    sampler.tick()
    flags = [
        [e.counter_reset for e in s.energy]
        for _, d in sampler.spool.pending(0, 10)
        for s in pb.Batch.FromString(d).gpus
    ]
    assert flags == [[False], [False], [False], [True], [False], [False]]
    assert sampler.latest.counter_resets[backend.inventory()[1].uuid] == 1


class FailingBackend(SimBackend):
    def read(self, read_energy: bool):  # type: ignore[no-untyped-def]
        raise RuntimeError("driver hiccup")


def test_a_failing_read_is_counted_not_fatal(tmp_path: Path) -> None:
    sampler = Sampler("n1", FailingBackend("n1", 1), Spool(tmp_path / "s.db"))
    sampler.tick()
    assert sampler.latest.read_errors_total == 1
    assert sampler.spool.last_seq == 0


class XidBackend(SimBackend):
    def read(self, read_energy: bool) -> Reading:
        reading = super().read(read_energy)
        uuid = self.inventory()[0].uuid
        return replace(reading, events=[HealthEvent(uuid, 1, HealthKind.XID, xid=79, detail="fell off the bus")])


def test_health_events_do_not_wait_for_a_full_batch(tmp_path: Path) -> None:
    sampler = Sampler("n1", XidBackend("n1", 2), Spool(tmp_path / "s.db"), batch_ticks=10)
    sampler.tick()
    (batch,) = [pb.Batch.FromString(d) for _, d in sampler.spool.pending(0, 10)]
    assert [(e.kind, e.xid) for e in batch.events] == [(pb.HEALTH_EVENT_KIND_XID, 79)]
    assert sampler.latest.xid_errors[batch.events[0].uuid] == 1
