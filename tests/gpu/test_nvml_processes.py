"""NvmlBackend on a real NVIDIA GPU: a process holding a CUDA context is listed,
the list is available, and (with the agent in the host's PID namespace) the
process carries its namespace identity as /proc gives it.

Run with `pytest -s -m gpu tests/gpu`.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pynvml
import pytest

from neocloud.agent.gpu.nvml import NvmlBackend
from neocloud.agent.gpu.pidns import INIT_PID_NAMESPACE, ProcPids

try:
    pynvml.nvmlInit()
    ctypes.CDLL("libcuda.so.1")
except (pynvml.NVMLError, OSError) as e:
    pytest.skip(
        f"NVML or CUDA is not usable here ({e}): these tests need an NVIDIA GPU and driver", allow_module_level=True
    )
else:
    pynvml.nvmlShutdown()

pytestmark = pytest.mark.gpu

# Holds the primary CUDA context of device 0 (the driver API only, no toolkit) until stdin closes.
HOLD_CONTEXT = (
    "import ctypes,sys\n"
    "cu=ctypes.CDLL('libcuda.so.1')\n"
    "d=ctypes.c_int();c=ctypes.c_void_p()\n"
    "assert cu.cuInit(0)==0 and cu.cuDeviceGet(ctypes.byref(d),0)==0\n"
    "assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(c),d)==0 and cu.cuCtxSetCurrent(c)==0\n"
    "print('ready',flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    p = subprocess.Popen([sys.executable, "-c", HOLD_CONTEXT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    yield p
    p.communicate(timeout=30)


def test_a_cuda_process_is_listed_with_its_pid_namespace(holder: subprocess.Popen[str]) -> None:
    backend = NvmlBackend()
    try:
        if ProcPids().own_namespace() != INIT_PID_NAMESPACE:
            # NVML shows a container only its own processes: every list is incomplete.
            assert all(s.processes_unavailable for s in backend.read(read_energy=False).samples)
            pytest.skip("not in the host's PID namespace: NVML's pids cannot be mapped here")
        deadline = time.monotonic() + 10
        while True:
            samples = backend.read(read_energy=False).samples
            assert not any(s.processes_unavailable for s in samples), "NVML could not list processes"
            listed = [p for s in samples for p in s.processes]
            ours = [p for p in listed if p.pid == holder.pid]
            if ours or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        backend.close()
    print(f"\nGPU processes: {listed}")
    (process,) = ours
    assert process.pid_namespace == os.stat(f"/proc/{holder.pid}/ns/pid").st_ino
    assert process.namespace_pids[0] == holder.pid
