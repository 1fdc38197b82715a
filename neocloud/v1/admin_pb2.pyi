from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_OPERATOR: _ClassVar[Role]
    ROLE_INTERNAL: _ClassVar[Role]
    ROLE_TENANT: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_OPERATOR: Role
ROLE_INTERNAL: Role
ROLE_TENANT: Role

class Tenant(_message.Message):
    __slots__ = ("name", "weight", "created_at", "internal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    created_at: float
    internal: bool
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., created_at: _Optional[float] = ..., internal: _Optional[bool] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name", "weight", "internal")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    internal: bool
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., internal: _Optional[bool] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("name", "role", "tenant", "created_at", "revoked_at", "expires_at", "token_id", "superseded_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    tenant: str
    created_at: float
    revoked_at: float
    expires_at: float
    token_id: str
    superseded_at: float
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., tenant: _Optional[str] = ..., created_at: _Optional[float] = ..., revoked_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., token_id: _Optional[str] = ..., superseded_at: _Optional[float] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "role", "tenant", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: Role
    tenant: str
    expires_at: float
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., tenant: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("info", "token")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    info: Token
    token: str
    def __init__(self, info: _Optional[_Union[Token, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateTokenRequest(_message.Message):
    __slots__ = ("name", "grace_s", "expires_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRACE_S_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    grace_s: float
    expires_at: float
    def __init__(self, name: _Optional[str] = ..., grace_s: _Optional[float] = ..., expires_at: _Optional[float] = ...) -> None: ...

class RotateTokenResponse(_message.Message):
    __slots__ = ("info", "token", "old")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    info: Token
    token: str
    old: Token
    def __init__(self, info: _Optional[_Union[Token, _Mapping]] = ..., token: _Optional[str] = ..., old: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class Contract(_message.Message):
    __slots__ = ("contract_id", "tenant", "gpus", "power_w", "gpu_model", "start", "end", "created_at")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    tenant: str
    gpus: int
    power_w: float
    gpu_model: str
    start: float
    end: float
    created_at: float
    def __init__(self, contract_id: _Optional[str] = ..., tenant: _Optional[str] = ..., gpus: _Optional[int] = ..., power_w: _Optional[float] = ..., gpu_model: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., created_at: _Optional[float] = ...) -> None: ...

class CreateContractRequest(_message.Message):
    __slots__ = ("tenant", "gpus", "power_w", "gpu_model", "start", "end", "contract_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    gpus: int
    power_w: float
    gpu_model: str
    start: float
    end: float
    contract_id: str
    def __init__(self, tenant: _Optional[str] = ..., gpus: _Optional[int] = ..., power_w: _Optional[float] = ..., gpu_model: _Optional[str] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., contract_id: _Optional[str] = ...) -> None: ...

class ListContractsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListContractsResponse(_message.Message):
    __slots__ = ("contracts",)
    CONTRACTS_FIELD_NUMBER: _ClassVar[int]
    contracts: _containers.RepeatedCompositeFieldContainer[Contract]
    def __init__(self, contracts: _Optional[_Iterable[_Union[Contract, _Mapping]]] = ...) -> None: ...

class DeleteContractRequest(_message.Message):
    __slots__ = ("contract_id",)
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    def __init__(self, contract_id: _Optional[str] = ...) -> None: ...

class DeleteContractResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndContractRequest(_message.Message):
    __slots__ = ("contract_id", "at")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    contract_id: str
    at: float
    def __init__(self, contract_id: _Optional[str] = ..., at: _Optional[float] = ...) -> None: ...

class ApplyRateCardRequest(_message.Message):
    __slots__ = ("yaml", "source", "dry_run")
    YAML_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    source: str
    dry_run: bool
    def __init__(self, yaml: _Optional[str] = ..., source: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class RateCardVersion(_message.Message):
    __slots__ = ("sequence", "sha256", "version", "source", "applied_by", "applied_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    sha256: str
    version: str
    source: str
    applied_by: str
    applied_at: float
    def __init__(self, sequence: _Optional[int] = ..., sha256: _Optional[str] = ..., version: _Optional[str] = ..., source: _Optional[str] = ..., applied_by: _Optional[str] = ..., applied_at: _Optional[float] = ...) -> None: ...

class InvoiceChange(_message.Message):
    __slots__ = ("tenant", "before", "after", "currency", "error")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    before: str
    after: str
    currency: str
    error: str
    def __init__(self, tenant: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ..., currency: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ApplyRateCardResponse(_message.Message):
    __slots__ = ("version", "applied", "period", "changes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    version: RateCardVersion
    applied: bool
    period: str
    changes: _containers.RepeatedCompositeFieldContainer[InvoiceChange]
    def __init__(self, version: _Optional[_Union[RateCardVersion, _Mapping]] = ..., applied: _Optional[bool] = ..., period: _Optional[str] = ..., changes: _Optional[_Iterable[_Union[InvoiceChange, _Mapping]]] = ...) -> None: ...

class ListRateCardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRateCardsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[RateCardVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[RateCardVersion, _Mapping]]] = ...) -> None: ...

class Setting(_message.Message):
    __slots__ = ("key", "value", "is_default", "description")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    is_default: bool
    description: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ..., is_default: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class SetSettingRequest(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class GetSettingsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSettingsResponse(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _containers.RepeatedCompositeFieldContainer[Setting]
    def __init__(self, settings: _Optional[_Iterable[_Union[Setting, _Mapping]]] = ...) -> None: ...

class Cordon(_message.Message):
    __slots__ = ("node_id", "reason", "at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    at: float
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ..., at: _Optional[float] = ...) -> None: ...

class CordonNodeRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UncordonNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class UncordonNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCordonsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCordonsResponse(_message.Message):
    __slots__ = ("cordons",)
    CORDONS_FIELD_NUMBER: _ClassVar[int]
    cordons: _containers.RepeatedCompositeFieldContainer[Cordon]
    def __init__(self, cordons: _Optional[_Iterable[_Union[Cordon, _Mapping]]] = ...) -> None: ...

class MoveGpuRequest(_message.Message):
    __slots__ = ("gpu_uuid", "to_node", "reason")
    GPU_UUID_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    gpu_uuid: str
    to_node: str
    reason: str
    def __init__(self, gpu_uuid: _Optional[str] = ..., to_node: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GpuMove(_message.Message):
    __slots__ = ("gpu_uuid", "from_node", "to_node", "energy_total_mj", "event")
    GPU_UUID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    ENERGY_TOTAL_MJ_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    gpu_uuid: str
    from_node: str
    to_node: str
    energy_total_mj: int
    event: AuditEvent
    def __init__(self, gpu_uuid: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., energy_total_mj: _Optional[int] = ..., event: _Optional[_Union[AuditEvent, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "at", "actor", "action", "subject", "detail_json", "reason")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    at: float
    actor: str
    action: str
    subject: str
    detail_json: str
    reason: str
    def __init__(self, event_id: _Optional[int] = ..., at: _Optional[float] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., subject: _Optional[str] = ..., detail_json: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("subject", "limit")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    limit: int
    def __init__(self, subject: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...
