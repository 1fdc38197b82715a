"""The size and shape of every API request, declared once.

Every string and bytes field of every request message has a maximum length,
every repeated or map field a maximum count, and every 64-bit unsigned
integer stops at what SQLite holds: a default per kind of field, and named
overrides (full proto field names) where a field needs more or less. `check`
walks a decoded request against them before its handler runs (the
ErrorInterceptor calls it), so no handler, store or error message ever sees
a 10,000-character value; a refusal names the field's path.

The handlers' own checks (job ids, tenant names, setting values...) stay
where they are and say what a value means; this table only bounds what a
field can hold. tests/unit/test_api_limits.py walks every request message of
every service and fails on a field this table cannot bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from neocloud.scheduler.ingest.bounds import INT64_MAX, TYPE_RANGES
from neocloud.scheduler.store import ratecards, validate

# Names, ids, keys, models and tenants: the store keeps none longer than this.
DEFAULT_LENGTH = 256
# Lists in a request (states to filter on, ...): far more than any needs.
DEFAULT_COUNT = 64

# Full field name -> the most characters (string) or bytes (bytes) of one value.
LENGTHS: Mapping[str, int] = {
    "neocloud.v1.JobSpec.command": validate.MAX_COMMAND_ARG,  # each argument
    "neocloud.v1.JobSpec.EnvEntry.value": validate.MAX_ENV_VALUE,
    "neocloud.v1.CordonNodeRequest.reason": validate.MAX_REASON,
    "neocloud.v1.MoveGpuRequest.reason": validate.MAX_REASON,
    # Settings are numbers and booleans ("0.5", "inf", "true").
    "neocloud.v1.SetSettingRequest.value": 64,
    # A whole rate-card file (thousands of contracts fit).
    "neocloud.v1.ApplyRateCardRequest.yaml": ratecards.MAX_RATECARD_BYTES,
}
# Full field name -> the most entries of a repeated or map field.
COUNTS: Mapping[str, int] = {
    "neocloud.v1.JobSpec.command": validate.MAX_COMMAND_ARGS,
    "neocloud.v1.JobSpec.env": validate.MAX_ENV,
}

_T = FieldDescriptor
_TEXT = {_T.TYPE_STRING, _T.TYPE_BYTES}
_NUMERIC = {_T.TYPE_DOUBLE, _T.TYPE_FLOAT, _T.TYPE_BOOL}
# Unsigned 64-bit values past INT64_MAX cannot be stored; every other integer fits as it comes.
_CAPPED = {_T.TYPE_UINT64, _T.TYPE_FIXED64}


@dataclass(frozen=True, slots=True)
class FieldLimit:
    length: int | None  # characters or bytes of one value; None: not text
    count: int | None  # entries; None: not repeated
    highest: int | None  # the largest integer; None: the wire type's own range is fine


def limit_of(field: FieldDescriptor) -> FieldLimit:
    """The limit of one field; ValueError for a kind of field this module does not know."""
    count = COUNTS.get(field.full_name, DEFAULT_COUNT) if field.is_repeated else None
    if field.type in _TEXT:
        return FieldLimit(LENGTHS.get(field.full_name, DEFAULT_LENGTH), count, None)
    if field.type in TYPE_RANGES:
        return FieldLimit(None, count, INT64_MAX if field.type in _CAPPED else None)
    if field.type in _NUMERIC or field.type == _T.TYPE_MESSAGE:
        return FieldLimit(None, count, None)
    raise ValueError(f"{field.full_name}: no limit for fields of type {field.type}")


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: tuple[tuple[FieldDescriptor, FieldLimit], ...]


_plans: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = _Plan(tuple((f, limit_of(f)) for f in descriptor.fields))
        _plans[descriptor.full_name] = plan
    return plan


def check(message: Message) -> str | None:
    """The first field over its limit, named by its path (e.g.
    "SubmitJobRequest.spec.command[3] has 5000 characters (at most 4096)"), or None."""
    reason = _check(message)
    return None if reason is None else f"{message.DESCRIPTOR.name}.{reason}"


def _check(message: Message) -> str | None:
    for field, limit in _plan(cast(Descriptor, message.DESCRIPTOR)).fields:
        value = getattr(message, field.name)
        if limit.count is None:
            if field.type == _T.TYPE_MESSAGE and not message.HasField(field.name):
                continue
            reason = _value(field, limit, value)
            if reason:
                return f"{field.name}{reason}"
            continue
        if len(value) > limit.count:
            return f"{field.name} has {len(value)} entries (at most {limit.count})"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            reason = _map(field.message_type, value)
        else:
            reason = next((f"[{i}]{r}" for i, v in enumerate(value) if (r := _value(field, limit, v))), None)
        if reason:
            return f"{field.name}{reason}"
    return None


def _map(entry: Descriptor, mapping: Mapping[object, object]) -> str | None:
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    key_limit, value_limit = limit_of(key_field), limit_of(value_field)
    for i, (key, value) in enumerate(mapping.items()):
        if reason := _value(key_field, key_limit, key):
            return f"[{i}].key{reason}"
        if reason := _value(value_field, value_limit, value):
            return f"[{i}].value{reason}"
    return None


def _value(field: FieldDescriptor, limit: FieldLimit, value: object) -> str | None:
    """What is wrong with one value, as the end of a sentence after its path; None if nothing."""
    if limit.length is not None and len(cast(str, value)) > limit.length:
        unit = "characters" if field.type == _T.TYPE_STRING else "bytes"
        return f" has {len(cast(str, value))} {unit} (at most {limit.length})"
    if limit.highest is not None and cast(int, value) > limit.highest:
        return f" {value} is larger than {limit.highest}"
    if field.type == _T.TYPE_MESSAGE:
        reason = _check(cast(Message, value))
        return None if reason is None else f".{reason}"
    return None
