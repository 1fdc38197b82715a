"""Reads the GPU backend on a fixed cadence and seals batches into the spool.

The cheap fields are read every tick; the energy counter only every
`energy_interval_s` (it costs ~3 ms per GPU on real hardware). A counter that
goes backwards (driver reload) is flagged here, once, for every backend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from neocloud.agent.convert import build_batch
from neocloud.agent.gpu.types import GpuBackend
from neocloud.agent.spool import Spool
from neocloud.domain.gpu import EnergyReading, GpuInfo, GpuSample, HealthKind, Reading

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Latest:
    """The newest reading of every GPU, for the exporter (replaced, never mutated)."""

    samples: dict[str, GpuSample] = field(default_factory=dict)
    energy: dict[str, EnergyReading] = field(default_factory=dict)
    xid_errors: Counter[str] = field(default_factory=Counter)
    counter_resets: Counter[str] = field(default_factory=Counter)
    read_errors_total: int = 0
    reads_total: int = 0


class Sampler:
    def __init__(
        self,
        node_id: str,
        backend: GpuBackend,
        spool: Spool,
        tick_s: float = 1.0,
        energy_interval_s: float = 10.0,
        batch_ticks: int = 10,
    ) -> None:
        if tick_s <= 0 or energy_interval_s <= 0 or batch_ticks < 1:
            raise ValueError("tick and energy interval must be positive and batch_ticks at least 1")
        self.node_id = node_id
        self.backend = backend
        self.spool = spool
        self.inventory: list[GpuInfo] = backend.inventory()
        self._tick_s = tick_s
        self._energy_interval_s = energy_interval_s
        self._batch_ticks = batch_ticks
        self._pending: list[Reading] = []
        self._next_energy = 0.0
        self._last_energy: dict[str, int] = {}
        self.latest = Latest()
        self._stop = threading.Event()

    def tick(self) -> None:
        """One read of every GPU; seals a batch when enough ticks are pending."""
        now = time.monotonic()
        read_energy = now >= self._next_energy
        if read_energy:
            self._next_energy = now + self._energy_interval_s
        try:
            reading = self.backend.read(read_energy)
        except Exception:
            # A failing read must not end the agent: log it and try next tick.
            logger.exception("GPU read failed")
            self.latest.read_errors_total += 1
            return
        reading = self._flag_counter_resets(reading)
        self._remember(reading)
        self._pending.append(reading)
        # Health events go out at once; samples wait for a full batch.
        if len(self._pending) >= self._batch_ticks or reading.events:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        batch = build_batch(self.node_id, self.inventory, self._pending, self.backend.now_us())
        self._pending = []
        self.spool.append(batch)

    def _flag_counter_resets(self, reading: Reading) -> Reading:
        if not reading.energy:
            return reading
        flagged = []
        for e in reading.energy:
            last = self._last_energy.get(e.uuid)
            if last is not None and e.energy_mj < last:
                logger.warning(
                    "GPU %s energy counter went back from %d to %d mJ (driver reload?)", e.uuid, last, e.energy_mj
                )
                e = replace(e, counter_reset=True)
            self._last_energy[e.uuid] = e.energy_mj
            flagged.append(e)
        return replace(reading, energy=flagged)

    def _remember(self, reading: Reading) -> None:
        latest = self.latest
        latest.reads_total += 1
        latest.samples.update((s.uuid, s) for s in reading.samples)
        latest.energy.update((e.uuid, e) for e in reading.energy)
        for e in reading.energy:
            if e.counter_reset:
                latest.counter_resets[e.uuid] += 1
        for ev in reading.events:
            if ev.kind == HealthKind.XID:
                latest.xid_errors[ev.uuid] += 1
            logger.warning("GPU %s health event kind=%d xid=%d %s", ev.uuid, ev.kind, ev.xid, ev.detail)

    def run(self) -> None:
        """Tick until stop(); ticks are scheduled on a fixed grid, not drifting."""
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            next_tick += self._tick_s
            delay = next_tick - time.monotonic()
            if delay < 0:
                logger.debug("sampler is %.3f s behind; skipping missed ticks", -delay)
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)
        self.flush()

    def stop(self) -> None:
        self._stop.set()
