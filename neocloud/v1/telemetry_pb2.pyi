from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_EVENT_KIND_UNSPECIFIED: _ClassVar[HealthEventKind]
    HEALTH_EVENT_KIND_XID: _ClassVar[HealthEventKind]
    HEALTH_EVENT_KIND_ECC_UNCORRECTED: _ClassVar[HealthEventKind]
    HEALTH_EVENT_KIND_GPU_LOST: _ClassVar[HealthEventKind]
HEALTH_EVENT_KIND_UNSPECIFIED: HealthEventKind
HEALTH_EVENT_KIND_XID: HealthEventKind
HEALTH_EVENT_KIND_ECC_UNCORRECTED: HealthEventKind
HEALTH_EVENT_KIND_GPU_LOST: HealthEventKind

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: Batch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "agent_version", "stream_epoch", "gpus", "backend")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    STREAM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    agent_version: str
    stream_epoch: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    backend: str
    def __init__(self, node_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., stream_epoch: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., backend: _Optional[str] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("index", "uuid", "model", "memory_total_bytes", "power_limit_mw")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_MW_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    model: str
    memory_total_bytes: int
    power_limit_mw: int
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., model: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., power_limit_mw: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("node_id", "stream_epoch", "seq", "agent_time_us", "gpus", "events", "dropped_samples_total")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    stream_epoch: int
    seq: int
    agent_time_us: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuSeries]
    events: _containers.RepeatedCompositeFieldContainer[HealthEvent]
    dropped_samples_total: int
    def __init__(self, node_id: _Optional[str] = ..., stream_epoch: _Optional[int] = ..., seq: _Optional[int] = ..., agent_time_us: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuSeries, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[HealthEvent, _Mapping]]] = ..., dropped_samples_total: _Optional[int] = ...) -> None: ...

class GpuSeries(_message.Message):
    __slots__ = ("uuid", "timestamp_us", "power_mw", "gpu_util_percent", "memory_util_percent", "memory_used_bytes", "temperature_c", "sm_clock_mhz", "throttle_reasons", "energy", "power_sample_us", "power_sample_mw", "processes", "ecc_corrected_total", "ecc_uncorrected_total", "processes_unavailable")
    UUID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    POWER_MW_FIELD_NUMBER: _ClassVar[int]
    GPU_UTIL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTIL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    THROTTLE_REASONS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    POWER_SAMPLE_US_FIELD_NUMBER: _ClassVar[int]
    POWER_SAMPLE_MW_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    timestamp_us: _containers.RepeatedScalarFieldContainer[int]
    power_mw: _containers.RepeatedScalarFieldContainer[int]
    gpu_util_percent: _containers.RepeatedScalarFieldContainer[int]
    memory_util_percent: _containers.RepeatedScalarFieldContainer[int]
    memory_used_bytes: _containers.RepeatedScalarFieldContainer[int]
    temperature_c: _containers.RepeatedScalarFieldContainer[int]
    sm_clock_mhz: _containers.RepeatedScalarFieldContainer[int]
    throttle_reasons: _containers.RepeatedScalarFieldContainer[int]
    energy: _containers.RepeatedCompositeFieldContainer[EnergyReading]
    power_sample_us: _containers.RepeatedScalarFieldContainer[int]
    power_sample_mw: _containers.RepeatedScalarFieldContainer[int]
    processes: _containers.RepeatedCompositeFieldContainer[GpuProcess]
    ecc_corrected_total: int
    ecc_uncorrected_total: int
    processes_unavailable: bool
    def __init__(self, uuid: _Optional[str] = ..., timestamp_us: _Optional[_Iterable[int]] = ..., power_mw: _Optional[_Iterable[int]] = ..., gpu_util_percent: _Optional[_Iterable[int]] = ..., memory_util_percent: _Optional[_Iterable[int]] = ..., memory_used_bytes: _Optional[_Iterable[int]] = ..., temperature_c: _Optional[_Iterable[int]] = ..., sm_clock_mhz: _Optional[_Iterable[int]] = ..., throttle_reasons: _Optional[_Iterable[int]] = ..., energy: _Optional[_Iterable[_Union[EnergyReading, _Mapping]]] = ..., power_sample_us: _Optional[_Iterable[int]] = ..., power_sample_mw: _Optional[_Iterable[int]] = ..., processes: _Optional[_Iterable[_Union[GpuProcess, _Mapping]]] = ..., ecc_corrected_total: _Optional[int] = ..., ecc_uncorrected_total: _Optional[int] = ..., processes_unavailable: _Optional[bool] = ...) -> None: ...

class EnergyReading(_message.Message):
    __slots__ = ("timestamp_us", "energy_mj", "counter_reset")
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MJ_FIELD_NUMBER: _ClassVar[int]
    COUNTER_RESET_FIELD_NUMBER: _ClassVar[int]
    timestamp_us: int
    energy_mj: int
    counter_reset: bool
    def __init__(self, timestamp_us: _Optional[int] = ..., energy_mj: _Optional[int] = ..., counter_reset: _Optional[bool] = ...) -> None: ...

class GpuProcess(_message.Message):
    __slots__ = ("pid", "used_memory_bytes", "pid_namespace", "namespace_pids")
    PID_FIELD_NUMBER: _ClassVar[int]
    USED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PID_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_PIDS_FIELD_NUMBER: _ClassVar[int]
    pid: int
    used_memory_bytes: int
    pid_namespace: int
    namespace_pids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pid: _Optional[int] = ..., used_memory_bytes: _Optional[int] = ..., pid_namespace: _Optional[int] = ..., namespace_pids: _Optional[_Iterable[int]] = ...) -> None: ...

class HealthEvent(_message.Message):
    __slots__ = ("timestamp_us", "uuid", "kind", "xid", "detail")
    TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    XID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    timestamp_us: int
    uuid: str
    kind: HealthEventKind
    xid: int
    detail: str
    def __init__(self, timestamp_us: _Optional[int] = ..., uuid: _Optional[str] = ..., kind: _Optional[_Union[HealthEventKind, str]] = ..., xid: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class SchedulerMessage(_message.Message):
    __slots__ = ("ack",)
    ACK_FIELD_NUMBER: _ClassVar[int]
    ack: Ack
    def __init__(self, ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("stream_epoch", "acked_seq", "scheduler_time_us", "rejected")
    STREAM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    stream_epoch: int
    acked_seq: int
    scheduler_time_us: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, stream_epoch: _Optional[int] = ..., acked_seq: _Optional[int] = ..., scheduler_time_us: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("seq", "reason")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    reason: str
    def __init__(self, seq: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
