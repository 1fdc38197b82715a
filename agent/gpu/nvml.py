"""Reads real GPUs through NVML (pynvml), at the costs of docs/DESIGN.md section 5.

Every per-GPU NVML call goes through `_query`: NotSupported becomes "no value
for this field on this GPU, never ask again", other errors are logged once
and give no value for that read, and a lost GPU becomes one health event. The
pynvml module is passed in so tests hand in `tests/fakes/fake_pynvml.py`.
A process list NVML cannot give is "unavailable", never "none" (fail closed).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from neocloud.agent.gpu.pidns import host_pids
from neocloud.agent.gpu.types import BackendError
from neocloud.domain.clock import wall_clock_us
from neocloud.domain.gpu import (
    EnergyReading,
    GpuInfo,
    GpuProcess,
    GpuSample,
    HealthEvent,
    HealthKind,
    PowerSample,
    Reading,
)

logger = logging.getLogger(__name__)

# A GPU flooding XIDs must not hold a read forever; the rest wait for the next read.
_MAX_EVENTS_PER_READ = 256

# Which member of nvmlValue_t holds a sample, by NVML_VALUE_TYPE_*.
_VALUE_FIELDS = {
    "NVML_VALUE_TYPE_DOUBLE": "dVal",
    "NVML_VALUE_TYPE_UNSIGNED_INT": "uiVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG": "ulVal",
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": "ullVal",
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": "sllVal",
    "NVML_VALUE_TYPE_SIGNED_INT": "siVal",
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": "usVal",
}

_NO_NVML = "Use --backend sim to run without GPUs"


def _text(value: Any) -> str:
    # Older pynvml releases return bytes where newer ones return str.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _handle_key(handle: Any) -> Hashable:
    """The device address: pynvml returns a new ctypes pointer object per call, so
    handles for one GPU are equal only by the address they point to."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (ctypes.ArgumentError, TypeError):
        return handle if isinstance(handle, Hashable) else id(handle)


def _import_pynvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as e:
        raise BackendError(f"pynvml is not installed ({e}): pip install nvidia-ml-py. {_NO_NVML}") from e


class _GpuLostError(Exception):
    """Raised by `_query` to stop reading a GPU that fell off the bus."""


@dataclass(eq=False)
class _Gpu:
    index: int
    handle: Any
    uuid: str
    unsupported: set[str] = field(default_factory=set)
    warned: set[tuple[str, int | None]] = field(default_factory=set)
    last_power_ts_us: int = 0
    last_ecc_uncorrected: int | None = None
    lost: bool = False
    lost_reported: bool = False


class NvmlBackend:
    """Every NVIDIA GPU NVML sees on this node."""

    name = "nvml"

    def __init__(
        self,
        nvml: ModuleType | None = None,
        clock_us: Callable[[], int] = wall_clock_us,
        proc_root: str | Path = "/proc",
    ) -> None:
        # pynvml has no type hints; treat the module as Any.
        self._nvml: Any = nvml if nvml is not None else _import_pynvml()
        self._clock_us = clock_us
        self._pids = host_pids(proc_root)
        self._lock = threading.Lock()
        self._closed = False
        nv = self._nvml
        self._error: type[Exception] = nv.NVMLError
        self._unsupported_codes = {nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND}
        self._value_fields = {getattr(nv, k): v for k, v in _VALUE_FIELDS.items() if hasattr(nv, k)}
        # Newer drivers renamed "throttle" to "event" reasons; old pynvml lacks the new name.
        names = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
        self._throttle_fn = next((n for n in names if hasattr(nv, n)), names[0])
        self._event_set: Any = None
        self._event_warned: set[int | None] = set()
        self._start()
        try:
            self._gpus, self._inventory = self._discover()
            self._uuid_by_handle = {_handle_key(g.handle): g.uuid for g in self._gpus}
            self._event_set = self._create_event_set()
        except BaseException:
            self._closed = True
            self._shutdown()
            raise

    # -- start-up ---------------------------------------------------------

    def _start(self) -> None:
        nv = self._nvml
        try:
            nv.nvmlInit()
        except OSError as e:
            raise BackendError(f"NVML could not be loaded ({e}): is the NVIDIA driver installed? {_NO_NVML}") from e
        except self._error as e:
            raise BackendError(self._start_advice(e)) from e

    def _start_advice(self, e: Exception) -> str:
        nv, code = self._nvml, getattr(e, "value", None)
        if code == nv.NVML_ERROR_LIBRARY_NOT_FOUND:
            return f"NVML could not be loaded ({e}): is the NVIDIA driver installed? {_NO_NVML}"
        if code == nv.NVML_ERROR_DRIVER_NOT_LOADED:
            return f"NVML found no running NVIDIA driver ({e}): load the nvidia kernel module. {_NO_NVML}"
        if code == nv.NVML_ERROR_NO_PERMISSION:
            return f"NVML refused access ({e}): run the agent as a user that may open /dev/nvidia*. {_NO_NVML}"
        if code == nv.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
            return f"NVML and the kernel driver differ in version ({e}): reboot after the driver upgrade. {_NO_NVML}"
        return f"NVML failed to start ({e}): check that nvidia-smi works. {_NO_NVML}"

    def _discover(self) -> tuple[list[_Gpu], list[GpuInfo]]:
        nv = self._nvml
        try:
            count = int(nv.nvmlDeviceGetCount())
        except self._error as e:
            raise BackendError(f"NVML could not count the GPUs ({e}): check that nvidia-smi works") from e
        gpus: list[_Gpu] = []
        infos: list[GpuInfo] = []
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                gpu = _Gpu(index, handle, _text(nv.nvmlDeviceGetUUID(handle)))
            except self._error as e:
                logger.error("GPU %d is unusable and left out (%s): see nvidia-smi", index, e)
                continue
            try:
                name = self._query(gpu, "model", "nvmlDeviceGetName", handle)
                memory = self._query(gpu, "memory", "nvmlDeviceGetMemoryInfo", handle)
                limit = self._query(gpu, "power_limit", "nvmlDeviceGetEnforcedPowerLimit", handle)
                if limit is None:
                    limit = self._query(gpu, "power_management_limit", "nvmlDeviceGetPowerManagementLimit", handle)
            except _GpuLostError:
                continue  # `_query` logged it; a GPU lost at start is not offered
            gpus.append(gpu)
            infos.append(
                GpuInfo(
                    index=index,
                    uuid=gpu.uuid,
                    model=_text(name) if name is not None else "unknown",
                    memory_total_bytes=int(memory.total) if memory is not None else 0,
                    power_limit_mw=int(limit) if limit is not None else 0,
                )
            )
        if not gpus:
            raise BackendError(f"NVML sees no usable GPU on this node: check nvidia-smi. {_NO_NVML}")
        return gpus, infos

    def _create_event_set(self) -> Any:
        nv = self._nvml
        try:
            event_set = nv.nvmlEventSetCreate()
        except (self._error, AttributeError) as e:
            # Without event sets the agent still meters; it only misses XIDs.
            logger.info("NVML event sets are unavailable (%s); XID errors will not be reported", e)
            return None
        registered = 0
        for gpu in self._gpus:
            try:
                nv.nvmlDeviceRegisterEvents(gpu.handle, nv.nvmlEventTypeXidCriticalError, event_set)
                registered += 1
            except self._error as e:
                level = logging.INFO if getattr(e, "value", None) in self._unsupported_codes else logging.WARNING
                logger.log(level, "GPU %d (%s): XID events unavailable (%s)", gpu.index, gpu.uuid, e)
        if registered:
            return event_set
        self._free_event_set(event_set)
        return None

    # -- the one place NVML is asked about a GPU --------------------------

    def _query(self, gpu: _Gpu, what: str, fn_name: str, *args: Any, no_data: int | None = None) -> Any:
        """`fn_name(*args)` for one field of one GPU, or None when it has no value.

        `no_data` is an error code that only means "nothing new" for this call.
        """
        if what in gpu.unsupported:
            return None
        if gpu.lost:
            raise _GpuLostError
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            self._mark_unsupported(gpu, what, f"pynvml has no {fn_name}")
            return None
        try:
            return fn(*args)
        except self._error as e:
            code = getattr(e, "value", None)
            if code in self._unsupported_codes:
                self._mark_unsupported(gpu, what, str(e))
                return None
            if code == self._nvml.NVML_ERROR_GPU_IS_LOST:
                gpu.lost = True
                logger.error("GPU %d (%s) is lost (%s): it needs a reset; no longer reading it", gpu.index, gpu.uuid, e)
                raise _GpuLostError from e
            if code is not None and code == no_data:
                return None
            if (what, code) not in gpu.warned:
                # Once per GPU, field and error kind: a flapping field must not flood the log.
                gpu.warned.add((what, code))
                logger.warning("GPU %d (%s): %s failed (%s); no value this read", gpu.index, gpu.uuid, fn_name, e)
            return None

    def _mark_unsupported(self, gpu: _Gpu, what: str, why: str) -> None:
        gpu.unsupported.add(what)
        level = logging.WARNING if what == "processes" else logging.INFO  # then its GPU is held after any job
        logger.log(level, "GPU %d (%s) does not report %s (%s); not asking again", gpu.index, gpu.uuid, what, why)

    # -- reading ------------------------------------------------------------

    def inventory(self) -> list[GpuInfo]:
        return list(self._inventory)

    def read(self, read_energy: bool) -> Reading:
        with self._lock:
            if self._closed:
                raise BackendError("the NVML backend is closed")
            reading = Reading()
            for gpu in self._gpus:
                if gpu.lost and gpu.lost_reported:
                    continue
                now = self._clock_us()
                with contextlib.suppress(_GpuLostError):  # `_query` marked it lost
                    self._read_gpu(gpu, now, read_energy, reading)
                if gpu.lost and not gpu.lost_reported:
                    gpu.lost_reported = True
                    reading.events.append(
                        HealthEvent(gpu.uuid, now, HealthKind.GPU_LOST, detail="NVML reports the GPU lost")
                    )
            reading.events.extend(self._poll_events())
            return reading

    def _read_gpu(self, gpu: _Gpu, now: int, read_energy: bool, reading: Reading) -> None:
        """Everything is read before anything is added, so a GPU lost mid-read adds nothing."""
        nv, h, q = self._nvml, gpu.handle, self._query
        # The energy counter first: it is the slow call and the timestamp should hug it.
        energy = q(gpu, "energy_mj", "nvmlDeviceGetTotalEnergyConsumption", h) if read_energy else None
        power = q(gpu, "power_mw", "nvmlDeviceGetPowerUsage", h)
        util = q(gpu, "utilization", "nvmlDeviceGetUtilizationRates", h)
        memory = q(gpu, "memory", "nvmlDeviceGetMemoryInfo", h)
        temperature = q(gpu, "temperature_c", "nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU)
        sm_clock = q(gpu, "sm_clock_mhz", "nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_SM)
        throttle = q(gpu, "throttle_reasons", self._throttle_fn, h)
        procs = q(gpu, "processes", "nvmlDeviceGetComputeRunningProcesses", h)
        ecc, volatile = "nvmlDeviceGetTotalEccErrors", nv.NVML_VOLATILE_ECC
        ecc_c = q(gpu, "ecc_corrected", ecc, h, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, volatile)
        ecc_u = q(gpu, "ecc_uncorrected", ecc, h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, volatile)
        buffered = self._power_buffer(gpu)
        # usedGpuMemory is None where the driver cannot tell (pynvml's WDDM case).
        processes = tuple(GpuProcess(int(p.pid), int(p.usedGpuMemory or 0)) for p in procs or ())
        processes = self._pids.annotate(processes) if self._pids is not None else processes

        reading.samples.append(
            GpuSample(
                uuid=gpu.uuid,
                timestamp_us=now,
                power_mw=None if power is None else int(power),
                gpu_util_percent=None if util is None else int(util.gpu),
                memory_util_percent=None if util is None else int(util.memory),
                memory_used_bytes=None if memory is None else int(memory.used),
                temperature_c=None if temperature is None else int(temperature),
                sm_clock_mhz=None if sm_clock is None else int(sm_clock),
                throttle_reasons=None if throttle is None else int(throttle),
                processes=processes,
                processes_unavailable=procs is None or self._pids is None,  # unknown, not none (pidns.host_pids)
                ecc_corrected_total=None if ecc_c is None else int(ecc_c),
                ecc_uncorrected_total=None if ecc_u is None else int(ecc_u),
            )
        )
        if energy is not None:
            # Resets (driver reloads) are flagged by the sampler, which sees every backend.
            reading.energy.append(EnergyReading(gpu.uuid, now, int(energy)))
        reading.power_samples.extend(buffered)
        if ecc_u is not None:
            last, gpu.last_ecc_uncorrected = gpu.last_ecc_uncorrected, int(ecc_u)
            if last is not None and int(ecc_u) > last:
                detail = f"volatile uncorrected ECC errors rose from {last} to {int(ecc_u)}"
                reading.events.append(HealthEvent(gpu.uuid, now, HealthKind.ECC_UNCORRECTED, detail=detail))

    def _power_buffer(self, gpu: _Gpu) -> list[PowerSample]:
        """The driver's power samples newer than the last one this backend saw."""
        nv = self._nvml
        # NotFound only means no sample is newer than last_power_ts_us.
        args = (gpu.handle, nv.NVML_TOTAL_POWER_SAMPLES, gpu.last_power_ts_us)
        got = self._query(gpu, "power_samples", "nvmlDeviceGetSamples", *args, no_data=nv.NVML_ERROR_NOT_FOUND)
        if not got:
            return []
        value_type, samples = got
        member = self._value_fields.get(value_type, "uiVal")
        out: list[PowerSample] = []
        # The buffer is a ring; sort it rather than trust its order.
        for s in sorted(samples, key=lambda s: int(s.timeStamp)):
            ts = int(s.timeStamp)
            if ts > gpu.last_power_ts_us:
                out.append(PowerSample(gpu.uuid, ts, round(getattr(s.sampleValue, member))))
                gpu.last_power_ts_us = ts
        return out

    def _poll_events(self) -> list[HealthEvent]:
        if self._event_set is None:
            return []
        nv = self._nvml
        wait = getattr(nv, "nvmlEventSetWait_v2", None) or nv.nvmlEventSetWait
        events: list[HealthEvent] = []
        now: int | None = None
        for _ in range(_MAX_EVENTS_PER_READ):
            try:
                data = wait(self._event_set, 0)
            except self._error as e:
                code = getattr(e, "value", None)
                if code != nv.NVML_ERROR_TIMEOUT and code not in self._event_warned:
                    self._event_warned.add(code)
                    logger.warning("waiting for NVML events failed (%s); trying again next read", e)
                break  # Timeout: no event pending
            if not int(data.eventType) & nv.nvmlEventTypeXidCriticalError:
                continue
            now = self._clock_us() if now is None else now
            xid = int(data.eventData)
            events.append(HealthEvent(self._uuid_of(data.device), now, HealthKind.XID, xid=xid, detail=f"XID {xid}"))
        return events

    def _uuid_of(self, handle: Any) -> str:
        key = _handle_key(handle)
        uuid = self._uuid_by_handle.get(key)
        if uuid is not None:
            return uuid
        if not key:
            return ""  # an XID no GPU is named for
        try:
            return _text(self._nvml.nvmlDeviceGetUUID(handle))
        except self._error as e:
            logger.warning("an XID came from a device NVML cannot name (%s)", e)
            return ""

    # -- shutting down ------------------------------------------------------

    def now_us(self) -> int:
        return self._clock_us()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shutdown()

    def _free_event_set(self, event_set: Any) -> None:
        try:
            self._nvml.nvmlEventSetFree(event_set)
        except self._error as e:
            logger.warning("freeing the NVML event set failed (%s)", e)

    def _shutdown(self) -> None:
        if self._event_set is not None:
            self._free_event_set(self._event_set)
            self._event_set = None
        try:
            self._nvml.nvmlShutdown()
        except self._error as e:
            logger.warning("nvmlShutdown failed (%s)", e)
