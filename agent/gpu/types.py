"""The interface every GPU backend implements (NVML, simulated, replayed); what
they return is in `neocloud.domain.gpu`."""

from __future__ import annotations

from typing import Protocol

from neocloud.domain.gpu import GpuInfo, Reading


class BackendError(RuntimeError):
    """A backend cannot start or cannot read; the message says what to do."""


class GpuBackend(Protocol):
    """A source of GPU readings: real NVML, simulated GPUs, or a recorded trace."""

    name: str

    def inventory(self) -> list[GpuInfo]:
        """The GPUs of this node, in index order."""
        ...

    def read(self, read_energy: bool) -> Reading:
        """Read every GPU once.

        The energy counter is read only when `read_energy` is true: on real
        hardware it costs milliseconds per call (docs/DESIGN.md section 5). A backend
        replaying a recording returns what the recording holds instead.
        """
        ...

    def now_us(self) -> int:
        """The clock readings are stamped with (a replay runs on its own)."""
        ...

    def close(self) -> None: ...
