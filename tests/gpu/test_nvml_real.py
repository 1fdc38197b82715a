"""NvmlBackend on a real NVIDIA GPU: sane fields, and power that integrates to the energy counter.

Run with `pytest -s -m gpu tests/gpu` to see the figures (they go into notes).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pynvml
import pytest

from neocloud.agent.gpu.nvml import NvmlBackend
from neocloud.domain.gpu import EnergyReading
from tests.helpers import integrate_mj

try:
    pynvml.nvmlInit()
except (pynvml.NVMLError, OSError) as e:
    pytest.skip(f"NVML is not usable here ({e}): these tests need an NVIDIA GPU and driver", allow_module_level=True)
else:
    pynvml.nvmlShutdown()

pytestmark = pytest.mark.gpu

TICK_S = 0.1
ENERGY_EVERY = 10  # ticks: the counter costs milliseconds (docs/DESIGN.md section 5)
ENERGY_READS = 6  # five seconds between the first and the last


@pytest.fixture(scope="module")
def backend() -> Iterator[NvmlBackend]:
    b = NvmlBackend()
    yield b
    b.close()


def test_inventory_and_fields_are_sane(backend: NvmlBackend) -> None:
    inventory = backend.inventory()
    assert inventory
    reading = backend.read(read_energy=True)
    samples = {s.uuid: s for s in reading.samples}
    for info in inventory:
        assert info.uuid.startswith("GPU-") and info.model and info.memory_total_bytes > 0
        sample = samples[info.uuid]
        assert sample.power_mw is not None and 0 <= sample.power_mw <= info.power_limit_mw * 1.2
        assert sample.temperature_c is None or 0 < sample.temperature_c < 120
        assert sample.gpu_util_percent is None or 0 <= sample.gpu_util_percent <= 100
        assert sample.memory_used_bytes is None or 0 <= sample.memory_used_bytes <= info.memory_total_bytes
        print(f"GPU {info.index} {info.uuid} {info.model}: {sample}")
    assert {e.uuid for e in reading.energy} <= samples.keys()
    assert all(e.energy_mj > 0 for e in reading.energy)


def test_power_integrates_to_the_energy_counter(backend: NvmlBackend) -> None:
    uuid = backend.inventory()[0].uuid
    energy: list[EnergyReading] = []
    buffered: dict[int, int] = {}
    reported: list[tuple[int, int]] = []
    cheap_s: list[float] = []
    with_energy_s: list[float] = []
    start = time.monotonic()
    # Two extra ticks after the last counter read fetch the power samples that cover its end.
    for tick in range(ENERGY_EVERY * (ENERGY_READS - 1) + 3):
        read_energy = tick % ENERGY_EVERY == 0 and len(energy) < ENERGY_READS
        t = time.perf_counter()
        reading = backend.read(read_energy)
        (with_energy_s if read_energy else cheap_s).append(time.perf_counter() - t)
        energy += [e for e in reading.energy if e.uuid == uuid]
        buffered.update((p.timestamp_us, p.power_mw) for p in reading.power_samples if p.uuid == uuid)
        reported += [(s.timestamp_us, s.power_mw) for s in reading.samples if s.uuid == uuid and s.power_mw is not None]
        time.sleep(max(0.0, start + (tick + 1) * TICK_S - time.monotonic()))  # pacing the reads, not waiting

    assert len(energy) == ENERGY_READS
    first, last = energy[0], energy[-1]
    counter_j = (last.energy_mj - first.energy_mj) / 1000
    window = [t for t in buffered if first.timestamp_us <= t <= last.timestamp_us]
    use_buffer = len(window) >= 10
    points = sorted(buffered.items()) if use_buffer else reported
    integrated_j = integrate_mj(points, first.timestamp_us, last.timestamp_us) / 1000
    gap = abs(integrated_j - counter_j) / counter_j
    span = (
        f"{(min(buffered) - first.timestamp_us) / 1e3:+.1f} ms .. {(max(buffered) - last.timestamp_us) / 1e3:+.1f} ms"
        " around the window"
        if buffered
        else "none"
    )
    print(
        f"\nGPU 0 {uuid}: {(last.timestamp_us - first.timestamp_us) / 1e6:.3f} s between counter reads"
        f"\n  energy counter delta   {counter_j:.3f} J"
        f"\n  integrated power       {integrated_j:.3f} J ({'power buffer' if use_buffer else 'reported power'})"
        f"\n  relative gap           {gap:.4%}"
        f"\n  power-buffer samples   {len(buffered)} read, {len(window)} inside the window"
        f"\n  power-buffer span      {span}"
        f"\n  reported-power integral {integrate_mj(reported, first.timestamp_us, last.timestamp_us) / 1000:.3f} J"
        f"\n  read() without energy  median {statistics.median(cheap_s) * 1e3:.3f} ms, max {max(cheap_s) * 1e3:.3f} ms"
        f"\n  read() with energy     median {statistics.median(with_energy_s) * 1e3:.3f} ms,"
        f" max {max(with_energy_s) * 1e3:.3f} ms"
    )
    assert counter_j > 0
    assert gap < 0.05
