"""A faithful fake of the part of pynvml the NVML backend uses, scripted per GPU.

Same function names and parameter names, same constant values, the same
`NVMLError` subclass scheme and structures with the same attribute names as
nvidia-ml-py (tests/unit/test_nvml_backend.py checks all of this against the
real module). Device handles are ctypes pointers, and like pynvml every call
returns a new pointer object, so code that compares handles by identity fails
here as it would on a real node.
"""

from __future__ import annotations

import ctypes
import string
import types
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

# -- constants: the values of nvml.h / pynvml -------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_TOTAL_POWER_SAMPLES = 0
NVML_VALUE_TYPE_DOUBLE = 0
NVML_VALUE_TYPE_UNSIGNED_INT = 1
NVML_VALUE_TYPE_UNSIGNED_LONG = 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = 3
NVML_VALUE_TYPE_SIGNED_LONG_LONG = 4
NVML_VALUE_TYPE_SIGNED_INT = 5
NVML_VALUE_TYPE_UNSIGNED_SHORT = 6
nvmlEventTypeNone = 0x0
nvmlEventTypeXidCriticalError = 0x8
nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwPowerCap = 0x4

CONSTANTS: dict[str, int] = {
    k: v for k, v in dict(globals()).items() if k.startswith(("NVML_", "nvmlEventType", "nvmlClocksEventReason"))
}

# -- errors: pynvml's scheme, NVMLError(code) is an instance of the code's subclass --


class NVMLError(Exception):
    _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}
    _errcode_to_string: ClassVar[dict[int, str]] = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:  # like pynvml, which leaves errors unhashable
        return self.value == getattr(other, "value", None)

    __hash__ = None  # type: ignore[assignment]


def _error_class(const_name: str, code: int) -> type[NVMLError]:
    # NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost, as pynvml's _extractNVMLErrorsAsClasses does.
    name = "NVMLError_" + string.capwords(const_name.replace("NVML_ERROR_", ""), "_").replace("_", "")

    def new(typ: type[NVMLError], *args: Any) -> NVMLError:
        return NVMLError.__new__(typ, code)

    cls = type(name, (NVMLError,), {"__new__": new})
    NVMLError._valClassMapping[code] = cls
    return cls


ERROR_CLASSES: dict[str, type[NVMLError]] = {
    c.__name__: c for c in (_error_class(k, v) for k, v in CONSTANTS.items() if k.startswith("NVML_ERROR_"))
}

# -- structures, with pynvml's field names -----------------------------------


class struct_c_nvmlDevice_t(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint)]  # opaque in NVML; the fake keeps its index here


c_nvmlDevice_t = ctypes.POINTER(struct_c_nvmlDevice_t)


class struct_c_nvmlEventSet_t(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint)]


class c_nvmlMemory_t(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class c_nvmlUtilization_t(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class c_nvmlValue_t(ctypes.Union):
    _fields_ = [
        ("dVal", ctypes.c_double),
        ("uiVal", ctypes.c_uint),
        ("ulVal", ctypes.c_ulong),
        ("ullVal", ctypes.c_ulonglong),
        ("sllVal", ctypes.c_longlong),
        ("siVal", ctypes.c_int),
        ("usVal", ctypes.c_ushort),
    ]


class c_nvmlSample_t(ctypes.Structure):
    _fields_ = [("timeStamp", ctypes.c_ulonglong), ("sampleValue", c_nvmlValue_t)]


class c_nvmlEventData_t(ctypes.Structure):
    _fields_ = [
        ("device", c_nvmlDevice_t),
        ("eventType", ctypes.c_ulonglong),
        ("eventData", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


@dataclass
class ProcessInfo:
    """pynvml's friendly object for c_nvmlProcessInfo_t; usedGpuMemory None = not available."""

    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


_VALUE_MEMBER = {
    NVML_VALUE_TYPE_DOUBLE: "dVal",
    NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
}

# -- the scripted GPUs ---------------------------------------------------------


@dataclass
class FakeGpu:
    """What one GPU answers; an idle H200 unless told otherwise."""

    uuid: str
    name: str = "NVIDIA H200"
    memory_total_bytes: int = 150_754_820_096
    memory_used_bytes: int = 644_939_776
    power_limit_mw: int = 700_000
    power_mw: int = 77_000
    gpu_util_percent: int = 0
    memory_util_percent: int = 0
    temperature_c: int = 31
    sm_clock_mhz: int = 345
    throttle_reasons: int = nvmlClocksEventReasonGpuIdle
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes or None)
    energy_mj: int = 3_482_120
    power_samples: list[tuple[int, int]] = field(default_factory=list)  # (timestamp µs, mW), oldest first
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    unsupported: set[str] = field(default_factory=set)  # function names answering NotSupported
    errors: dict[str, int] = field(default_factory=dict)  # function name -> error code, while present
    pending_xids: deque[int] = field(default_factory=deque)
    lost: bool = False


class FakeNvml(types.ModuleType):
    """Acts as the pynvml module for a list of FakeGpu."""

    def __init__(
        self,
        gpus: Sequence[FakeGpu],
        *,
        bytes_strings: bool = False,
        power_value_type: int = NVML_VALUE_TYPE_UNSIGNED_INT,
        hidden: Iterable[str] = (),
        unsupported: Iterable[str] = (),
        buffer_size: int = 120,
    ) -> None:
        super().__init__("pynvml")
        self.__dict__.update(CONSTANTS)
        self.__dict__.update(ERROR_CLASSES)
        self.NVMLError = NVMLError
        self.gpus = list(gpus)
        self.bytes_strings = bytes_strings  # pynvml before 11.5 returned bytes
        self.power_value_type = power_value_type
        self.hidden = set(hidden)  # functions this pynvml release lacks
        self.missing: set[str] = set()  # names asked for that the fake lacks
        self.unsupported = set(unsupported)  # functions not tied to a GPU that answer NotSupported
        self.buffer_size = buffer_size  # the driver keeps ~120 power samples
        self.calls: Counter[str] = Counter()
        self.calls_by_gpu: Counter[tuple[str, int]] = Counter()
        self.init_count = 0
        self._init_error: BaseException | None = None
        self._devices = [struct_c_nvmlDevice_t(i) for i in range(len(self.gpus))]
        self._event_sets: dict[int, tuple[struct_c_nvmlEventSet_t, set[int]]] = {}
        self._next_set_id = 1

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in super().__getattribute__("hidden"):
            super().__getattribute__("missing").add(name)
            raise AttributeError(f"module 'pynvml' has no attribute {name!r}")
        return super().__getattribute__(name)

    def __getattr__(self, name: str) -> Any:
        # Remembered so a test can tell a misspelt call from a function pynvml lacks.
        self.missing.add(name)
        raise AttributeError(f"module 'pynvml' has no attribute {name!r}")

    # -- helpers for tests ----------------------------------------------------

    def fail_init(self, error: int | BaseException | None) -> None:
        """Make nvmlInit raise NVMLError(code), or the given exception; None heals it."""
        self._init_error = NVMLError(error) if isinstance(error, int) else error

    def advance_energy(self, index: int, mj: int) -> None:
        self.gpus[index].energy_mj += mj

    def reset_energy(self, index: int) -> None:
        """What a driver reload does to the counter."""
        self.gpus[index].energy_mj = 0

    def push_xid(self, index: int, xid: int) -> None:
        self.gpus[index].pending_xids.append(xid)

    def push_power_samples(self, index: int, samples: Iterable[tuple[int, int]]) -> None:
        gpu = self.gpus[index]
        gpu.power_samples.extend(samples)
        del gpu.power_samples[: -self.buffer_size]  # a ring buffer: the oldest fall out

    @property
    def open_event_sets(self) -> int:
        return len(self._event_sets)

    # -- plumbing -------------------------------------------------------------

    def _enter(self, fn: str) -> None:
        self.calls[fn] += 1
        if self.init_count == 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if fn in self.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def _gpu(self, fn: str, handle: Any) -> FakeGpu:
        self._enter(fn)
        try:
            index = handle.contents.index
        except (AttributeError, ValueError) as e:  # not a device pointer, or NULL
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT) from e
        if ctypes.addressof(handle.contents) != ctypes.addressof(self._devices[index]):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        self.calls_by_gpu[fn, index] += 1
        gpu = self.gpus[index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if fn in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if fn in gpu.errors:
            raise NVMLError(gpu.errors[fn])
        return gpu

    def _text(self, value: str) -> str | bytes:
        return value.encode() if self.bytes_strings else value

    def _handle(self, index: int) -> Any:
        return ctypes.pointer(self._devices[index])  # a new pointer object each time, as in pynvml

    # -- the pynvml functions -------------------------------------------------

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self._init_error is not None:
            raise self._init_error
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.init_count -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self._handle(index)

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        return self._text(self._gpu("nvmlDeviceGetUUID", handle).uuid)

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        return self._text(self._gpu("nvmlDeviceGetName", handle).name)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> c_nvmlMemory_t:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        used = gpu.memory_used_bytes
        return c_nvmlMemory_t(gpu.memory_total_bytes, gpu.memory_total_bytes - used, used)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetPowerManagementLimit", handle).power_limit_mw

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> c_nvmlUtilization_t:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return c_nvmlUtilization_t(gpu.gpu_util_percent, gpu.memory_util_percent)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        if type != NVML_CLOCK_SM:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # only the SM clock is scripted
        return gpu.sm_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_reasons

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[ProcessInfo]:
        gpu = self._gpu("nvmlDeviceGetComputeRunningProcesses", handle)
        return [ProcessInfo(pid, used) for pid, used in gpu.processes]

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        if counterType not in (NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return gpu.ecc_corrected
        if errorType == NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return gpu.ecc_uncorrected
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetSamples(self, device: Any, sampling_type: int, timeStamp: int) -> tuple[int, list[c_nvmlSample_t]]:
        gpu = self._gpu("nvmlDeviceGetSamples", device)
        if sampling_type != NVML_TOTAL_POWER_SAMPLES:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # only the power buffer is scripted
        newer = [(t, mw) for t, mw in gpu.power_samples if t > timeStamp]
        if not newer:
            raise NVMLError(NVML_ERROR_NOT_FOUND)  # what the driver says when nothing is newer
        member = _VALUE_MEMBER[self.power_value_type]
        out = []
        for t, mw in newer:
            sample = c_nvmlSample_t()
            sample.timeStamp = t
            setattr(sample.sampleValue, member, float(mw) if member == "dVal" else mw)
            out.append(sample)
        return self.power_value_type, out

    def nvmlEventSetCreate(self) -> Any:
        self._enter("nvmlEventSetCreate")
        event_set = struct_c_nvmlEventSet_t(self._next_set_id)
        self._next_set_id += 1
        self._event_sets[event_set.id] = (event_set, set())
        return ctypes.pointer(event_set)

    def _registered(self, eventSet: Any) -> set[int]:
        try:
            return self._event_sets[eventSet.contents.id][1]
        except (AttributeError, ValueError, KeyError) as e:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT) from e

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        self._gpu("nvmlDeviceRegisterEvents", handle)
        if eventTypes & ~nvmlEventTypeXidCriticalError:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # only XIDs are scripted
        self._registered(eventSet).add(handle.contents.index)

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> c_nvmlEventData_t:
        self._enter("nvmlEventSetWait_v2")
        for index in sorted(self._registered(eventSet)):
            gpu = self.gpus[index]
            if gpu.pending_xids:
                data = c_nvmlEventData_t()
                data.device = self._handle(index)
                data.eventType = nvmlEventTypeXidCriticalError
                data.eventData = gpu.pending_xids.popleft()
                return data
        raise NVMLError(NVML_ERROR_TIMEOUT)  # the fake never blocks, whatever timeoutms says

    def nvmlEventSetWait(self, eventSet: Any, timeoutms: int) -> c_nvmlEventData_t:
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        self._enter("nvmlEventSetFree")
        self._registered(eventSet)  # freeing twice is a bug NVML would not forgive
        del self._event_sets[eventSet.contents.id]
