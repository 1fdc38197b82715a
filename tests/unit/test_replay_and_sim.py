from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from neocloud.agent.gpu.replay import ReplayBackend, load_trace
from neocloud.agent.gpu.sim import FLAT_OUT_MW, IDLE_NO_CONTEXT_MW, SimBackend
from neocloud.agent.gpu.types import BackendError
from tests.helpers import H200_TRACE


def test_real_h200_trace_loads_with_its_identity() -> None:
    trace = load_trace(H200_TRACE)
    assert trace.info.uuid == "GPU-a4db0f73-ae90-89b5-3b40-3b9ce54272a0"
    assert trace.info.power_limit_mw == 700_000
    assert len(trace.records) == 338
    assert trace.counter_delta_mj == 14_886_338  # the meta file's energy_counter_delta_j


def test_replay_releases_records_as_replay_time_passes() -> None:
    now = [0]
    backend = ReplayBackend([load_trace(H200_TRACE)], speed=10, clock_us=lambda: now[0])
    first = backend.read(read_energy=False)
    assert len(first.samples) == 1 and len(first.energy) == 1  # the first record carries energy
    now[0] = 1_000_000  # 10 s of trace
    second = backend.read(read_energy=False)
    assert 95 <= len(second.samples) <= 101
    assert all(a.timestamp_us <= b.timestamp_us for a, b in pairwise(second.samples))
    assert second.samples[-1].timestamp_us <= backend.now_us() == 10_000_000  # replay time runs 10x
    now[0] = 10**9
    rest = backend.read(read_energy=False)
    assert backend.finished
    energy = first.energy + second.energy + rest.energy
    assert energy[-1].energy_mj - energy[0].energy_mj == 14_886_338


def write_trace(tmp: Path, lines: list[str], meta: object | None = None) -> Path:
    path = tmp / "t.jsonl"
    path.write_text("\n".join(lines))
    meta = meta if meta is not None else json.loads(Path(str(H200_TRACE).replace(".jsonl", ".meta.json")).read_text())
    (tmp / "t.meta.json").write_text(json.dumps(meta))
    return path


def test_bad_traces_name_file_and_line(tmp_path: Path) -> None:
    good = H200_TRACE.read_text().splitlines()[0]
    with pytest.raises(BackendError, match=r"t.jsonl:2: bad trace record"):
        load_trace(write_trace(tmp_path, [good, '{"t": 1}']))
    with pytest.raises(BackendError, match="not a trace meta file"):
        load_trace(write_trace(tmp_path, [good], meta={"device": {}}))
    (tmp_path / "t.meta.json").unlink()
    with pytest.raises(BackendError, match=r"needs its \.meta\.json"):
        load_trace(tmp_path / "t.jsonl")
    with pytest.raises(BackendError, match="same GPU UUID"):
        ReplayBackend([load_trace(H200_TRACE), load_trace(H200_TRACE)])


def test_sim_power_follows_load_and_counter_integrates_it() -> None:
    now = [0]
    backend = SimBackend("n1", 2, clock_us=lambda: now[0])
    idle = backend.read(read_energy=True)
    assert all(abs(s.power_mw - IDLE_NO_CONTEXT_MW) < 0.02 * IDLE_NO_CONTEXT_MW for s in idle.samples)  # type: ignore[operator]
    assert all(s.processes == () for s in idle.samples)
    backend.set_load(1.0)
    now[0] = 10_000_000
    busy = backend.read(read_energy=True)
    assert all(abs(s.power_mw - FLAT_OUT_MW) < 0.02 * FLAT_OUT_MW for s in busy.samples)  # type: ignore[operator]
    assert all(s.gpu_util_percent == 100 and len(s.processes) == 1 for s in busy.samples)
    for before, after in zip(idle.energy, busy.energy, strict=True):
        # 10 s between roughly 77 W and 670 W (the load switched at t=0).
        assert 6_000_000 < after.energy_mj - before.energy_mj < 7_000_000
    with pytest.raises(ValueError, match="within"):
        backend.set_load(1.5)
