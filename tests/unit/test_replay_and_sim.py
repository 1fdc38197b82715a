from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path

import pytest

from neocloud.agent.gpu.replay import ReplayBackend
from neocloud.agent.gpu.sim import (
    DEFAULT_JOB_LOAD,
    FLAT_OUT_MW,
    IDLE_NO_CONTEXT_MW,
    IDLE_WITH_CONTEXT_MW,
    RayJobProcesses,
    SimBackend,
)
from neocloud.agent.gpu.types import BackendError
from neocloud.agent.main import AgentConfig, make_backend
from neocloud.domain.trace import TraceError, load_trace
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
    with pytest.raises(TraceError, match=r"t.jsonl:2: bad trace record"):
        load_trace(write_trace(tmp_path, [good, '{"t": 1}']))
    with pytest.raises(TraceError, match="not a trace meta file"):
        load_trace(write_trace(tmp_path, [good], meta={"device": {}}))
    (tmp_path / "t.meta.json").unlink()
    with pytest.raises(TraceError, match=r"needs its \.meta\.json"):
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


def _fake_process(proc: Path, pid: int, ppid: int, argv: list[str], env: dict[str, str]) -> None:
    d = proc / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({Path(argv[0]).name} x) S {ppid} {pid} {pid} 0 -1\n")  # a name with a space
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))


def test_sim_follows_the_ray_jobs_on_its_node(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    raylet = "/venv/ray/core/src/ray/raylet/raylet"
    job = {"NEOCLOUD_JOB_ID": "j-1", "CUDA_VISIBLE_DEVICES": "0,1", "NEOCLOUD_SIM_LOAD": "0.5"}
    _fake_process(proc, 100, 1, [raylet, '--labels={"neocloud.io/node-id": "n1"}'], {})
    _fake_process(proc, 101, 100, ["ray::RunnerActor"], {"CUDA_VISIBLE_DEVICES": "0,1"})  # not a job
    _fake_process(proc, 102, 101, ["python", "-c", "train"], job)
    _fake_process(proc, 103, 102, ["sleep", "1"], job)  # the job's child holds the GPUs too
    _fake_process(proc, 200, 1, [raylet, '--labels={"neocloud.io/node-id": "n2"}'], {})
    _fake_process(proc, 201, 200, ["python"], {"NEOCLOUD_JOB_ID": "j-2", "CUDA_VISIBLE_DEVICES": "2"})  # other node
    _fake_process(proc, 300, 1, ["python"], {"NEOCLOUD_JOB_ID": "j-3", "CUDA_VISIBLE_DEVICES": "3"})  # not under Ray
    (proc / "self").mkdir()  # non-pid entries are skipped
    now = [0]
    backend = SimBackend("n1", 4, clock_us=lambda: now[0], jobs=RayJobProcesses("n1", proc=proc))

    busy = backend.read(read_energy=True)
    assert [[p.pid for p in s.processes] for s in busy.samples] == [[102, 103], [102, 103], [], []]
    half = IDLE_WITH_CONTEXT_MW + 0.5 * (FLAT_OUT_MW - IDLE_WITH_CONTEXT_MW)
    assert [abs(s.power_mw - half) < 0.02 * half for s in busy.samples] == [True, True, False, False]  # type: ignore[operator]
    assert all(abs(s.power_mw - IDLE_NO_CONTEXT_MW) < 0.02 * IDLE_NO_CONTEXT_MW for s in busy.samples[2:])  # type: ignore[operator]

    for pid in (102, 103):  # the job ends: NVML no longer lists it, the GPUs idle
        shutil.rmtree(proc / str(pid))
    now[0] = 10_000_000
    idle = backend.read(read_energy=True)
    assert all(s.processes == () for s in idle.samples)
    assert abs(idle.samples[0].power_mw - IDLE_NO_CONTEXT_MW) < 0.02 * IDLE_NO_CONTEXT_MW  # type: ignore[operator]
    # 10 s at the job's ~392 W, then a step down at the read that saw it gone.
    used = idle.energy[0].energy_mj - busy.energy[0].energy_mj
    assert 3_800_000 < used < 4_050_000


def test_sim_job_load_defaults_and_bounds(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    _fake_process(proc, 100, 1, ["/x/raylet", '--labels={"neocloud.io/node-id": "n1"}'], {})
    _fake_process(proc, 101, 100, ["a"], {"NEOCLOUD_JOB_ID": "j", "CUDA_VISIBLE_DEVICES": "0"})
    _fake_process(
        proc, 102, 100, ["b"], {"NEOCLOUD_JOB_ID": "k", "CUDA_VISIBLE_DEVICES": "1", "NEOCLOUD_SIM_LOAD": "7"}
    )
    _fake_process(
        proc, 103, 100, ["c"], {"NEOCLOUD_JOB_ID": "l", "CUDA_VISIBLE_DEVICES": "2", "NEOCLOUD_SIM_LOAD": "x"}
    )
    found = RayJobProcesses("n1", proc=proc)()
    assert found == {0: [(101, DEFAULT_JOB_LOAD)], 1: [(102, 1.0)], 2: [(103, DEFAULT_JOB_LOAD)]}
    assert RayJobProcesses("n9", proc=proc)() == {}  # no raylet labelled for this node


def test_agent_option_makes_the_sim_follow_jobs() -> None:
    backend = make_backend(AgentConfig(node_id="n1", backend="sim", sim_follow_jobs=True))
    assert isinstance(backend, SimBackend) and isinstance(backend._jobs, RayJobProcesses)
    assert make_backend(AgentConfig(node_id="n1", backend="sim"))._jobs is None  # type: ignore[attr-defined]
