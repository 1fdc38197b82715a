from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGrouping(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUPING_UNSPECIFIED: _ClassVar[UsageGrouping]
    USAGE_GROUPING_JOB: _ClassVar[UsageGrouping]
    USAGE_GROUPING_DAY: _ClassVar[UsageGrouping]
    USAGE_GROUPING_MODEL: _ClassVar[UsageGrouping]
USAGE_GROUPING_UNSPECIFIED: UsageGrouping
USAGE_GROUPING_JOB: UsageGrouping
USAGE_GROUPING_DAY: UsageGrouping
USAGE_GROUPING_MODEL: UsageGrouping

class GetInvoiceRequest(_message.Message):
    __slots__ = ("tenant", "period")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    period: str
    def __init__(self, tenant: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class GetInvoiceResponse(_message.Message):
    __slots__ = ("invoice_json",)
    INVOICE_JSON_FIELD_NUMBER: _ClassVar[int]
    invoice_json: str
    def __init__(self, invoice_json: _Optional[str] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("tenant", "period", "group_by", "since", "until")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    period: str
    group_by: UsageGrouping
    since: float
    until: float
    def __init__(self, tenant: _Optional[str] = ..., period: _Optional[str] = ..., group_by: _Optional[_Union[UsageGrouping, str]] = ..., since: _Optional[float] = ..., until: _Optional[float] = ...) -> None: ...

class UsageGroup(_message.Message):
    __slots__ = ("key", "gpu_hours", "energy_kwh", "utilised_gpu_hours", "cost")
    KEY_FIELD_NUMBER: _ClassVar[int]
    GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    UTILISED_GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    key: str
    gpu_hours: float
    energy_kwh: float
    utilised_gpu_hours: float
    cost: str
    def __init__(self, key: _Optional[str] = ..., gpu_hours: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., utilised_gpu_hours: _Optional[float] = ..., cost: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("groups", "currency", "rate_version", "unpriced")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    RATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[UsageGroup]
    currency: str
    rate_version: str
    unpriced: str
    def __init__(self, groups: _Optional[_Iterable[_Union[UsageGroup, _Mapping]]] = ..., currency: _Optional[str] = ..., rate_version: _Optional[str] = ..., unpriced: _Optional[str] = ...) -> None: ...

class ExportUsageRequest(_message.Message):
    __slots__ = ("tenant", "period")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    period: str
    def __init__(self, tenant: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class UsageRecord(_message.Message):
    __slots__ = ("usage_id", "tenant", "job_id", "allocation_id", "gpu_model", "job_class", "contract_id", "hour", "gpu_ms", "energy_mj", "util_gpu_ms", "peak_power_mw", "memory_peak_bytes")
    USAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    JOB_CLASS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    HOUR_FIELD_NUMBER: _ClassVar[int]
    GPU_MS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_MJ_FIELD_NUMBER: _ClassVar[int]
    UTIL_GPU_MS_FIELD_NUMBER: _ClassVar[int]
    PEAK_POWER_MW_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    usage_id: str
    tenant: str
    job_id: str
    allocation_id: str
    gpu_model: str
    job_class: str
    contract_id: str
    hour: int
    gpu_ms: int
    energy_mj: int
    util_gpu_ms: int
    peak_power_mw: int
    memory_peak_bytes: int
    def __init__(self, usage_id: _Optional[str] = ..., tenant: _Optional[str] = ..., job_id: _Optional[str] = ..., allocation_id: _Optional[str] = ..., gpu_model: _Optional[str] = ..., job_class: _Optional[str] = ..., contract_id: _Optional[str] = ..., hour: _Optional[int] = ..., gpu_ms: _Optional[int] = ..., energy_mj: _Optional[int] = ..., util_gpu_ms: _Optional[int] = ..., peak_power_mw: _Optional[int] = ..., memory_peak_bytes: _Optional[int] = ...) -> None: ...

class UsagePage(_message.Message):
    __slots__ = ("records", "rate_version", "currency")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    rate_version: str
    currency: str
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ..., rate_version: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...
