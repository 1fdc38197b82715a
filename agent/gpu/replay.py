"""Replays recorded NVML readings (`neocloud.domain.trace`) as a GPU backend.

Each trace is one GPU; its identity comes from the `.meta.json` beside it.
Records are released as replay time passes (optionally faster than real
time). Replay time starts at the wall clock and keeps the recording's
spacing, so a real H200's readings flow through the pipeline as if read now,
and power x time still matches the energy counter, which keeps its recorded
values and cadence.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from neocloud.agent.gpu.types import BackendError
from neocloud.domain.clock import wall_clock_us
from neocloud.domain.gpu import GpuInfo, Reading
from neocloud.domain.trace import Trace, TraceError, add_record, check_one_trace_per_gpu, load_trace

logger = logging.getLogger(__name__)


class ReplayBackend:
    """Replays one trace per GPU, `speed` times faster than it was recorded."""

    name = "replay"

    def __init__(
        self,
        traces: Sequence[Trace],
        speed: float = 1.0,
        clock_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        if not traces:
            raise BackendError("replay needs at least one trace (--replay-trace FILE)")
        if speed <= 0:
            raise BackendError(f"--replay-speed must be positive, not {speed}")
        try:
            check_one_trace_per_gpu(traces)
        except TraceError as e:
            raise BackendError(str(e)) from e
        self._traces = list(traces)
        self._speed = speed
        self._clock_us = clock_us
        self._lock = threading.Lock()
        self._start_us: int | None = None
        self._next = [0] * len(traces)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], speed: float = 1.0) -> ReplayBackend:
        try:
            return cls([load_trace(p, i) for i, p in enumerate(paths)], speed)
        except TraceError as e:
            raise BackendError(str(e)) from e

    @property
    def finished(self) -> bool:
        return all(n >= len(t.records) for n, t in zip(self._next, self._traces, strict=True))

    def inventory(self) -> list[GpuInfo]:
        return [t.info for t in self._traces]

    def read(self, read_energy: bool) -> Reading:
        # The trace decides the energy cadence: it holds the readings it holds.
        del read_energy
        reading = Reading()
        with self._lock:
            start_us = self._started()
            elapsed_s = (self.now_us() - start_us) / 1e6
            for i, trace in enumerate(self._traces):
                t0 = trace.records[0].t_s
                while self._next[i] < len(trace.records) and trace.records[self._next[i]].t_s - t0 <= elapsed_s:
                    record = trace.records[self._next[i]]
                    self._next[i] += 1
                    stamp = start_us + round((record.t_s - t0) * 1e6)
                    add_record(reading, trace.info.uuid, stamp, record)
        return reading

    def _started(self) -> int:
        if self._start_us is None:
            self._start_us = self._clock_us()
        return self._start_us

    def now_us(self) -> int:
        """Replay time: the wall clock at the first read, then `speed` times faster."""
        start_us = self._started()
        return start_us + round((self._clock_us() - start_us) * self._speed)

    def close(self) -> None:
        logger.debug("replay backend closed")
