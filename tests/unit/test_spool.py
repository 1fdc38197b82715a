from __future__ import annotations

from pathlib import Path

import pytest

from neocloud.agent.convert import build_batch
from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.spool import Spool
from neocloud.v1 import telemetry_pb2 as pb


def make_batch(backend: SimBackend, energy: bool = True) -> pb.Batch:
    return build_batch("n1", backend.inventory(), [backend.read(read_energy=energy)], 1)


@pytest.fixture
def backend() -> SimBackend:
    ticks = iter(range(1, 10**9))
    return SimBackend("n1", 2, load=0.5, clock_us=lambda: next(ticks) * 1_000_000)


def test_append_assigns_sequence_and_survives_reopen(tmp_path: Path, backend: SimBackend) -> None:
    spool = Spool(tmp_path / "s.db")
    assert [spool.append(make_batch(backend)) for _ in range(3)] == [1, 2, 3]
    epoch = spool.epoch
    spool.close()
    again = Spool(tmp_path / "s.db")
    assert again.epoch == epoch
    assert [seq for seq, _ in again.pending(0, 10)] == [1, 2, 3]
    assert again.append(make_batch(backend)) == 4
    batch = pb.Batch.FromString(again.pending(3, 1)[0][1])
    assert (batch.stream_epoch, batch.seq) == (epoch, 4)


def test_ack_forgets_up_to_seq_and_ignores_other_epochs(tmp_path: Path, backend: SimBackend) -> None:
    spool = Spool(tmp_path / "s.db")
    for _ in range(5):
        spool.append(make_batch(backend))
    assert spool.ack(spool.epoch + 1, 5) == 0
    assert spool.ack(spool.epoch, 3) == 3
    assert [seq for seq, _ in spool.pending(0, 10)] == [4, 5]
    assert spool.stats().batches == 2
    spool.ack(spool.epoch, 5, rejected=1)
    stats = spool.stats()
    assert (stats.batches, stats.bytes, stats.rejected_batches_total) == (0, 0, 1)


def test_bound_drops_oldest_raw_samples_but_never_energy(tmp_path: Path, backend: SimBackend) -> None:
    one = len(make_batch(backend).SerializeToString())
    spool = Spool(tmp_path / "s.db", max_bytes=one * 6)
    for i in range(10):
        spool.append(make_batch(backend, energy=i % 5 == 0))
    stats = spool.stats()
    assert stats.bytes <= one * 6
    assert stats.dropped_samples_total > 0
    batches = [pb.Batch.FromString(data) for _, data in spool.pending(0, 100)]
    assert len(batches) == 10  # no batch is dropped whole
    for batch in batches:
        for series in batch.gpus:
            assert len(series.energy) == (1 if batch.seq in (1, 6) else 0)  # every energy reading kept
    stripped = [b for b in batches if not b.gpus[0].timestamp_us]
    assert len(stripped) * 2 == stats.dropped_samples_total  # 2 GPUs, one sample each
    assert [b.seq for b in stripped] == list(range(1, len(stripped) + 1))  # oldest first
    # Batches sealed after the drop report it, so the scheduler can see it.
    spool.append(make_batch(backend))
    assert pb.Batch.FromString(spool.pending(10, 1)[0][1]).dropped_samples_total >= stats.dropped_samples_total


def test_bound_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        Spool(tmp_path / "s.db", max_bytes=0)
