"""Protobuf <-> domain, at the edge only: the store and the controller never
see a protobuf message. Unknown or unset enum values are INVALID_ARGUMENT."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable

from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.policy.types import JobClass
from neocloud.scheduler.store import settings as site_settings
from neocloud.scheduler.store.audit import AdminEvent
from neocloud.scheduler.store.ratecards import StoredRateCard
from neocloud.scheduler.store.records import (
    DEFAULT_GRACE_S,
    Allocation,
    ContractRecord,
    CordonRecord,
    Job,
    JobEvent,
    JobSpec,
    JobState,
    Role,
    TenantRecord,
    TokenRecord,
)
from neocloud.v1 import admin_pb2 as admin_pb
from neocloud.v1 import jobs_pb2 as pb

MAX_JOB_ID = 64

_CLASSES = {
    pb.JOB_CLASS_INTERNAL: JobClass.INTERNAL,
    pb.JOB_CLASS_RESERVED: JobClass.RESERVED,
    pb.JOB_CLASS_ON_DEMAND: JobClass.ON_DEMAND,
    pb.JOB_CLASS_SPOT: JobClass.SPOT,
}
_CLASSES_PB = {cls: value for value, cls in _CLASSES.items()}
_STATES = {
    pb.JOB_STATE_QUEUED: JobState.QUEUED,
    pb.JOB_STATE_RUNNING: JobState.RUNNING,
    pb.JOB_STATE_PREEMPTING: JobState.PREEMPTING,
    pb.JOB_STATE_SUCCEEDED: JobState.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobState.FAILED,
    pb.JOB_STATE_CANCELLED: JobState.CANCELLED,
}
_STATES_PB = {state: value for value, state in _STATES.items()}
_ROLES = {
    admin_pb.ROLE_OPERATOR: Role.OPERATOR,
    admin_pb.ROLE_INTERNAL: Role.INTERNAL,
    admin_pb.ROLE_TENANT: Role.TENANT,
}
_ROLES_PB = {role: value for value, role in _ROLES.items()}


def job_class(value: int) -> JobClass:
    if value not in _CLASSES:
        raise InvalidArgumentError("job_class must be one of INTERNAL, RESERVED, ON_DEMAND, SPOT")
    return _CLASSES[value]  # type: ignore[index]


def job_state(value: int) -> JobState:
    if value not in _STATES:
        raise InvalidArgumentError(f"states: {value} is not a job state")
    return _STATES[value]  # type: ignore[index]


def role(value: int) -> Role:
    if value not in _ROLES:
        raise InvalidArgumentError("role must be one of OPERATOR, INTERNAL, TENANT")
    return _ROLES[value]  # type: ignore[index]


def job_id(value: str) -> str:
    if not value:
        raise InvalidArgumentError("job_id is required")
    if len(value) > MAX_JOB_ID:
        raise InvalidArgumentError(f"job_id is {len(value)} characters long; job ids have at most {MAX_JOB_ID}")
    return value


def time_s(field: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{field} must be a finite Unix time in seconds, not {value!r}")
    return value


def spec(message: pb.JobSpec, tenant: str, client_request_id: str) -> JobSpec:
    """The domain spec of a request (field checks are the store's: validate.job_spec)."""
    gpus = message.gpus
    per_node = message.gpus_per_node or (gpus if 0 < gpus <= 8 else 8)
    return JobSpec(
        tenant=tenant,
        client_request_id=client_request_id or uuid.uuid4().hex,
        job_class=job_class(message.job_class),
        gpus=gpus,
        gpus_per_node=per_node,
        command=tuple(message.command) or None,
        entrypoint=message.entrypoint or None,
        env=dict(message.env),
        gpu_model=message.gpu_model or None,
        grace_s=message.grace_s if message.HasField("grace_s") else DEFAULT_GRACE_S,
        max_runtime_s=message.max_runtime_s if message.HasField("max_runtime_s") else None,
        requeue_on_preempt=message.requeue_on_preempt if message.HasField("requeue_on_preempt") else True,
        contract_id=message.contract_id or None,
        name=message.name,
        cpus=message.cpus,
        memory_bytes=message.memory_bytes,
        after_ok=tuple(message.after_ok),
        array=message.array,
        workdir_digest=message.workdir_digest,
        ray=message.ray,
    )


def spec_to_proto(s: JobSpec) -> pb.JobSpec:
    message = pb.JobSpec(
        job_class=_CLASSES_PB[s.job_class],
        gpus=s.gpus,
        gpus_per_node=s.gpus_per_node,
        gpu_model=s.gpu_model or "",
        command=list(s.command or ()),
        entrypoint=s.entrypoint or "",
        env=s.env,
        grace_s=s.grace_s,
        requeue_on_preempt=s.requeue_on_preempt,
        contract_id=s.contract_id or "",
        name=s.name,
        cpus=s.cpus,
        memory_bytes=s.memory_bytes,
        after_ok=list(s.after_ok),
        array=s.array,
        workdir_digest=s.workdir_digest,
        ray=s.ray,
    )
    if s.max_runtime_s is not None:
        message.max_runtime_s = s.max_runtime_s
    return message


def allocation_to_proto(a: Allocation) -> pb.Allocation:
    message = pb.Allocation(
        allocation_id=a.allocation_id,
        node_id=a.node_id,
        gpu_uuids=list(a.gpu_uuids),
        start=a.start,
        end_reason=a.end_reason or "",
        sandbox=a.sandbox,
    )
    if a.end is not None:
        message.end = a.end
    return message


def job_to_proto(job: Job, allocations: Iterable[Allocation] = ()) -> pb.Job:
    message = pb.Job(
        job_id=job.job_id,
        tenant=job.tenant,
        client_request_id=job.spec.client_request_id,
        spec=spec_to_proto(job.spec),
        state=_STATES_PB[job.state],
        submitted_at=job.submitted_at,
        requeues=job.requeues,
        message=job.message,
        cancel_requested=job.cancel_requested,
        allocations=[allocation_to_proto(a) for a in allocations],
        array_job_id=job.array_job_id or "",
    )
    if job.array_index is not None:
        message.array_task_id = job.array_index
    for name in ("started_at", "ended_at", "exit_code", "last_checkpoint_at", "preemption_notice_at"):
        value = getattr(job, name)
        if value is not None:
            setattr(message, name, value)
    return message


def event_to_proto(e: JobEvent) -> pb.JobEvent:
    return pb.JobEvent(
        event_id=e.event_id, job_id=e.job_id, at=e.at, kind=e.kind, message=e.message, state=_STATES_PB[e.state]
    )


def tenant_to_proto(t: TenantRecord) -> admin_pb.Tenant:
    return admin_pb.Tenant(name=t.name, weight=t.weight, created_at=t.created_at, internal=t.internal)


def token_to_proto(t: TokenRecord) -> admin_pb.Token:
    message = admin_pb.Token(
        name=t.name, role=_ROLES_PB[t.role], tenant=t.tenant or "", created_at=t.created_at, token_id=t.token_id
    )
    for field in ("revoked_at", "expires_at", "superseded_at"):
        if getattr(t, field) is not None:
            setattr(message, field, getattr(t, field))
    return message


def contract_to_proto(c: ContractRecord) -> admin_pb.Contract:
    return admin_pb.Contract(
        contract_id=c.contract_id,
        tenant=c.tenant,
        gpus=c.gpus,
        power_w=c.power_w,
        gpu_model=c.gpu_model or "",
        start=c.start,
        end=c.end,
        created_at=c.created_at,
    )


def cordon_to_proto(c: CordonRecord) -> admin_pb.Cordon:
    return admin_pb.Cordon(node_id=c.node_id, reason=c.reason, at=c.at)


def setting_to_proto(key: str, value: site_settings.SettingValue, is_default: bool) -> admin_pb.Setting:
    return admin_pb.Setting(
        key=key,
        value=site_settings.render(value),
        is_default=is_default,
        description=site_settings.SETTINGS[key].help,
    )


def audit_event_to_proto(e: AdminEvent) -> admin_pb.AuditEvent:
    return admin_pb.AuditEvent(
        event_id=e.event_id,
        at=e.at,
        actor=e.actor,
        action=e.action,
        subject=e.subject,
        detail_json=json.dumps(e.detail, sort_keys=True),
        reason=e.reason,
    )


def ratecard_version_to_proto(v: StoredRateCard) -> admin_pb.RateCardVersion:
    return admin_pb.RateCardVersion(
        sequence=v.sequence,
        sha256=v.sha256,
        version=v.version,
        source=v.source,
        applied_by=v.applied_by,
        applied_at=v.applied_at,
    )
