from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_CLASS_UNSPECIFIED: _ClassVar[JobClass]
    JOB_CLASS_INTERNAL: _ClassVar[JobClass]
    JOB_CLASS_RESERVED: _ClassVar[JobClass]
    JOB_CLASS_ON_DEMAND: _ClassVar[JobClass]
    JOB_CLASS_SPOT: _ClassVar[JobClass]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_PREEMPTING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_CLASS_UNSPECIFIED: JobClass
JOB_CLASS_INTERNAL: JobClass
JOB_CLASS_RESERVED: JobClass
JOB_CLASS_ON_DEMAND: JobClass
JOB_CLASS_SPOT: JobClass
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_PREEMPTING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class JobSpec(_message.Message):
    __slots__ = ("job_class", "gpus", "gpus_per_node", "gpu_model", "command", "entrypoint", "env", "grace_s", "max_runtime_s", "requeue_on_preempt", "contract_id", "name", "cpus", "memory_bytes", "after_ok", "array", "workdir_digest", "ray")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_CLASS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNTIME_S_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_ON_PREEMPT_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    AFTER_OK_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RAY_FIELD_NUMBER: _ClassVar[int]
    job_class: JobClass
    gpus: int
    gpus_per_node: int
    gpu_model: str
    command: _containers.RepeatedScalarFieldContainer[str]
    entrypoint: str
    env: _containers.ScalarMap[str, str]
    grace_s: float
    max_runtime_s: float
    requeue_on_preempt: bool
    contract_id: str
    name: str
    cpus: int
    memory_bytes: int
    after_ok: _containers.RepeatedScalarFieldContainer[str]
    array: str
    workdir_digest: str
    ray: bool
    def __init__(self, job_class: _Optional[_Union[JobClass, str]] = ..., gpus: _Optional[int] = ..., gpus_per_node: _Optional[int] = ..., gpu_model: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., entrypoint: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., grace_s: _Optional[float] = ..., max_runtime_s: _Optional[float] = ..., requeue_on_preempt: _Optional[bool] = ..., contract_id: _Optional[str] = ..., name: _Optional[str] = ..., cpus: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., after_ok: _Optional[_Iterable[str]] = ..., array: _Optional[str] = ..., workdir_digest: _Optional[str] = ..., ray: _Optional[bool] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "client_request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    client_request_id: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., client_request_id: _Optional[str] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("allocation_id", "node_id", "gpu_uuids", "start", "end", "end_reason", "sandbox")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_UUIDS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    node_id: str
    gpu_uuids: _containers.RepeatedScalarFieldContainer[str]
    start: float
    end: float
    end_reason: str
    sandbox: str
    def __init__(self, allocation_id: _Optional[str] = ..., node_id: _Optional[str] = ..., gpu_uuids: _Optional[_Iterable[str]] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., end_reason: _Optional[str] = ..., sandbox: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "tenant", "client_request_id", "spec", "state", "submitted_at", "started_at", "ended_at", "requeues", "exit_code", "message", "cancel_requested", "last_checkpoint_at", "preemption_notice_at", "allocations", "array_job_id", "array_task_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEUES_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECKPOINT_AT_FIELD_NUMBER: _ClassVar[int]
    PREEMPTION_NOTICE_AT_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ARRAY_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ARRAY_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    client_request_id: str
    spec: JobSpec
    state: JobState
    submitted_at: float
    started_at: float
    ended_at: float
    requeues: int
    exit_code: int
    message: str
    cancel_requested: bool
    last_checkpoint_at: float
    preemption_notice_at: float
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    array_job_id: str
    array_task_id: int
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., client_request_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., submitted_at: _Optional[float] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., requeues: _Optional[int] = ..., exit_code: _Optional[int] = ..., message: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., last_checkpoint_at: _Optional[float] = ..., preemption_notice_at: _Optional[float] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., array_job_id: _Optional[str] = ..., array_task_id: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "limit", "tenant", "all_tenants", "name", "array_job_id")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ALL_TENANTS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARRAY_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    limit: int
    tenant: str
    all_tenants: bool
    name: str
    array_job_id: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., limit: _Optional[int] = ..., tenant: _Optional[str] = ..., all_tenants: _Optional[bool] = ..., name: _Optional[str] = ..., array_job_id: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "array")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    array: bool
    def __init__(self, job_id: _Optional[str] = ..., array: _Optional[bool] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_event_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_event_id: int
    def __init__(self, job_id: _Optional[str] = ..., after_event_id: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("event_id", "job_id", "at", "kind", "message", "state")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    job_id: str
    at: float
    kind: str
    message: str
    state: JobState
    def __init__(self, event_id: _Optional[int] = ..., job_id: _Optional[str] = ..., at: _Optional[float] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class JobLogsRequest(_message.Message):
    __slots__ = ("job_id", "offset", "follow", "rank")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    offset: int
    follow: bool
    rank: int
    def __init__(self, job_id: _Optional[str] = ..., offset: _Optional[int] = ..., follow: _Optional[bool] = ..., rank: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("offset", "data", "eof")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    eof: bool
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...
