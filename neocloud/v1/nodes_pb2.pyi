from neocloud.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClassCount(_message.Message):
    __slots__ = ("job_class", "gpus")
    JOB_CLASS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    job_class: _jobs_pb2.JobClass
    gpus: int
    def __init__(self, job_class: _Optional[_Union[_jobs_pb2.JobClass, str]] = ..., gpus: _Optional[int] = ...) -> None: ...

class NodeJob(_message.Message):
    __slots__ = ("job_id", "tenant", "job_class", "gpus")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    JOB_CLASS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    job_class: _jobs_pb2.JobClass
    gpus: int
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., job_class: _Optional[_Union[_jobs_pb2.JobClass, str]] = ..., gpus: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "gpu_model", "gpus", "gpus_allocated", "gpus_idle", "gpus_unhealthy", "allocated_by_class", "power_w", "power_limit_w", "connected", "last_seen_at", "health", "cordoned", "cordon_reason", "jobs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPUS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    GPUS_IDLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_UNHEALTHY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_BY_CLASS_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CORDONED_FIELD_NUMBER: _ClassVar[int]
    CORDON_REASON_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    gpu_model: str
    gpus: int
    gpus_allocated: int
    gpus_idle: int
    gpus_unhealthy: int
    allocated_by_class: _containers.RepeatedCompositeFieldContainer[ClassCount]
    power_w: float
    power_limit_w: float
    connected: bool
    last_seen_at: float
    health: _containers.RepeatedScalarFieldContainer[str]
    cordoned: bool
    cordon_reason: str
    jobs: _containers.RepeatedCompositeFieldContainer[NodeJob]
    def __init__(self, node_id: _Optional[str] = ..., gpu_model: _Optional[str] = ..., gpus: _Optional[int] = ..., gpus_allocated: _Optional[int] = ..., gpus_idle: _Optional[int] = ..., gpus_unhealthy: _Optional[int] = ..., allocated_by_class: _Optional[_Iterable[_Union[ClassCount, _Mapping]]] = ..., power_w: _Optional[float] = ..., power_limit_w: _Optional[float] = ..., connected: _Optional[bool] = ..., last_seen_at: _Optional[float] = ..., health: _Optional[_Iterable[str]] = ..., cordoned: _Optional[bool] = ..., cordon_reason: _Optional[str] = ..., jobs: _Optional[_Iterable[_Union[NodeJob, _Mapping]]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...
