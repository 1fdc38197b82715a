"""GPU backends behind one protocol (types.py): real NVML, simulated GPUs shaped like the H200 traces, and trace replay.
Imports neocloud.domain only; the only place that touches pynvml is nvml.py."""

from neocloud.agent.gpu.sim import SimBackend

__all__ = ["SimBackend"]
