"""The whole pipeline on a real GPU: the NVML agent streams to a scheduler over
gRPC while the GPU works, and the scheduler's energy equals the counter's delta
and agrees with the driver's power buffer.

Run with `pytest -s -m gpu tests/gpu` to see the figures (they go into notes).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neocloud.agent.gpu.types import GpuBackend
from neocloud.agent.main import Agent, AgentConfig
from neocloud.domain.gpu import GpuInfo, Reading
from neocloud.scheduler.metering.ledger import Ledger
from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig
from neocloud.scheduler.store.db import open_db
from tests.helpers import integrate_mj, wait_until

pynvml = pytest.importorskip("pynvml")
pytestmark = pytest.mark.gpu

LOAD_S = 8.0
# bf16 matmuls for LOAD_S seconds on GPU 0, then exit (only where PyTorch is installed).
LOAD = """
import sys, time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
"""


class Recording:
    """Wraps a backend and keeps every reading, to check against the scheduler."""

    def __init__(self, backend: GpuBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.readings: list[Reading] = []

    def inventory(self) -> list[GpuInfo]:
        return self.backend.inventory()

    def read(self, read_energy: bool) -> Reading:
        reading = self.backend.read(read_energy)
        self.readings.append(reading)
        return reading

    def now_us(self) -> int:
        return self.backend.now_us()

    def close(self) -> None:
        self.backend.close()


def test_nvml_agent_streams_energy_that_matches_the_counter(tmp_path: Path) -> None:
    from neocloud.agent.gpu.nvml import NvmlBackend

    try:
        backend = Recording(NvmlBackend())
    except Exception as e:  # noqa: BLE001 - any NVML failure means "no GPU here"
        pytest.skip(f"NVML is not usable here: {e}")
    sched = BackgroundScheduler(
        SchedulerConfig(
            listen="127.0.0.1:0", db_path=str(tmp_path / "s.db"), metrics_port=None, insecure=True, init=True
        )
    )
    config = AgentConfig(
        node_id="gpu-node",
        scheduler=f"127.0.0.1:{sched.port}",
        backend="nvml",
        tick_s=0.1,
        energy_interval_s=1.0,
        batch_ticks=10,
        spool_path=str(tmp_path / "spool.db"),
        metrics_port=None,
        insecure=True,
    )
    agent = Agent(config, backend=backend)
    load = None
    if importlib.util.find_spec("torch") is not None:
        load = subprocess.Popen([sys.executable, "-c", LOAD, str(LOAD_S)])
    agent.start()
    time.sleep(LOAD_S + 4)
    agent.stop(drain_s=10)
    if load is not None:
        load.wait(timeout=60)
    fleet = sched.scheduler.telemetry.fleet
    wait_until(lambda: fleet.nodes["gpu-node"].durable_seq == agent.spool.last_seq, what="every batch committed")
    node = fleet.nodes["gpu-node"]
    sched.stop()

    assert fleet.counters.batches_rejected == 0
    for gpu in backend.inventory():
        energy = [e for r in backend.readings for e in r.energy if e.uuid == gpu.uuid]
        power = [(p.timestamp_us, p.power_mw) for r in backend.readings for p in r.power_samples if p.uuid == gpu.uuid]
        polled = [(s.timestamp_us, s.power_mw) for r in backend.readings for s in r.samples if s.uuid == gpu.uuid]
        delta_mj = energy[-1].energy_mj - energy[0].energy_mj
        at_scheduler = node.gpus[gpu.uuid].energy.total_mj
        buffered = integrate_mj(power, energy[0].timestamp_us, energy[-1].timestamp_us) if power else float("nan")
        span_s = (energy[-1].timestamp_us - energy[0].timestamp_us) / 1e6
        peak_w = max(p for _, p in polled if p is not None) / 1e3
        print(
            f"\nGPU {gpu.index} {gpu.model} {gpu.uuid}: load={'torch bf16 matmul' if load else 'none'} "
            f"span={span_s:.2f}s counter_delta={delta_mj / 1e3:.3f}J scheduler={at_scheduler / 1e3:.3f}J "
            f"power_buffer_integral={buffered / 1e3:.3f}J gap={abs(buffered - delta_mj) / delta_mj:.4%} "
            f"mean={delta_mj / 1e3 / span_s:.1f}W peak_polled={peak_w:.0f}W buffer_samples={len(power)} "
            f"energy_reads={len(energy)} batches={agent.spool.last_seq} samples={fleet.counters.samples}"
        )
        assert at_scheduler == delta_mj  # nothing lost, nothing twice
        # Metering: with no allocations every joule is the GPU's idle energy, attributed on ingest
        # and closed into the ledger; the rows add up to the counter delta and the wall time.
        ledger_db = open_db(tmp_path / "s.db")
        (attributed_mj,) = ledger_db.execute(
            "SELECT SUM(energy_mj) FROM meter_cells WHERE uuid = ?", (gpu.uuid,)
        ).fetchone()
        end_s = energy[-1].timestamp_us / 1e6
        ledger = Ledger(ledger_db, clock=lambda end_s=end_s: end_s)
        ledger.run_pass()
        (rows_mj,) = ledger_db.execute(
            "SELECT SUM(energy_mj) FROM usage WHERE allocation_id = ?", (f"idle:{gpu.uuid}",)
        ).fetchone()
        print(f"GPU {gpu.index}: attributed={attributed_mj / 1e3:.3f}J ledger={rows_mj / 1e3:.3f}J")
        assert attributed_mj == pytest.approx(delta_mj, rel=1e-9)
        assert rows_mj == pytest.approx(delta_mj, abs=len(energy))  # integer mJ per hour row
        ledger_db.close()
        if power:
            assert abs(buffered - delta_mj) / delta_mj < 0.05
