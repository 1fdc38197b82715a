"""The range of every integer field of every telemetry message, declared once.

SQLite stores integers as signed 64-bit: a uint64 of 2^63 or more cannot be
written, and one such value in a commit used to fail it for every node. So
every 64-bit field a node sends is bounded to what the store can hold (or
less), and nothing outside its field's range is applied. Cross-field
plausibility (power against the GPU's limit, memory used against its total,
energy against time) stays in validate.py; this table is about what a field
can hold at all.

`check` walks any message against the table (a Hello is checked with it). A
batch, the hot path, is checked in validate.py's one pass over it, with the
bounds read from here, and `check` is called only to name what that pass
found wrong.

tests/unit/test_bounds.py walks the proto descriptors: an integer field added
to telemetry.proto without a line here fails it, and so does a range of a
batch's field that validate.py does not enforce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

INT64_MAX = 2**63 - 1  # the largest integer SQLite holds
UINT32_MAX = 2**32 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# message -> field -> (lowest, highest) allowed value, both inclusive.
BOUNDS: Mapping[str, Mapping[str, tuple[int, int]]] = {
    "Hello": {"stream_epoch": (1, INT64_MAX)},
    "GpuInfo": {
        "index": (0, UINT32_MAX),
        "memory_total_bytes": (0, INT64_MAX),
        # The plausible range (HARD_POWER_CAP_MW) is checked in validate.py.
        "power_limit_mw": (0, UINT32_MAX),
    },
    "Batch": {
        # Must equal the Hello's (checked in service.py), which is 1 or more.
        "stream_epoch": (0, INT64_MAX),
        # 0 is a replay of nothing (dropped as a duplicate), as it always was.
        "seq": (0, INT64_MAX),
        "agent_time_us": (0, INT64_MAX),
        "dropped_samples_total": (0, INT64_MAX),
    },
    "GpuSeries": {
        "timestamp_us": (0, INT64_MAX),
        "power_mw": (0, UINT32_MAX),
        "gpu_util_percent": (0, UINT32_MAX),
        "memory_util_percent": (0, UINT32_MAX),
        "memory_used_bytes": (0, INT64_MAX),
        "temperature_c": (INT32_MIN, INT32_MAX),
        "sm_clock_mhz": (0, UINT32_MAX),
        "throttle_reasons": (0, INT64_MAX),
        "power_sample_us": (0, INT64_MAX),
        "power_sample_mw": (0, UINT32_MAX),
        "ecc_corrected_total": (0, INT64_MAX),
        "ecc_uncorrected_total": (0, INT64_MAX),
    },
    "EnergyReading": {"timestamp_us": (0, INT64_MAX), "energy_mj": (0, INT64_MAX)},
    "GpuProcess": {
        "pid": (0, UINT32_MAX),
        "used_memory_bytes": (0, INT64_MAX),
        # An nsfs inode; 0 = unknown. Zero pids (in the chain too) are refused in validate.py.
        "pid_namespace": (0, INT64_MAX),
        "namespace_pids": (0, UINT32_MAX),
    },
    "HealthEvent": {"timestamp_us": (0, INT64_MAX), "kind": (INT32_MIN, INT32_MAX), "xid": (0, UINT32_MAX)},
    # Sent by the scheduler, never read from a node; bounded all the same.
    "Ack": {"stream_epoch": (0, INT64_MAX), "acked_seq": (0, INT64_MAX), "scheduler_time_us": (0, INT64_MAX)},
    "Rejection": {"seq": (0, INT64_MAX)},
}

_T = FieldDescriptor
TYPE_RANGES: Mapping[int, tuple[int, int]] = {
    _T.TYPE_INT32: (INT32_MIN, INT32_MAX),
    _T.TYPE_SINT32: (INT32_MIN, INT32_MAX),
    _T.TYPE_SFIXED32: (INT32_MIN, INT32_MAX),
    _T.TYPE_ENUM: (INT32_MIN, INT32_MAX),
    _T.TYPE_UINT32: (0, UINT32_MAX),
    _T.TYPE_FIXED32: (0, UINT32_MAX),
    _T.TYPE_INT64: (-(2**63), INT64_MAX),
    _T.TYPE_SINT64: (-(2**63), INT64_MAX),
    _T.TYPE_SFIXED64: (-(2**63), INT64_MAX),
    _T.TYPE_UINT64: (0, 2**64 - 1),
    _T.TYPE_FIXED64: (0, 2**64 - 1),
}


def integer_fields(message: Descriptor) -> list[FieldDescriptor]:
    return [f for f in message.fields if f.type in TYPE_RANGES]


def _is_repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What `check` looks at in one message type: the fields whose declared
    range is narrower than their wire type's, and the message fields below."""

    scalars: tuple[tuple[str, int, int], ...]
    columns: tuple[tuple[str, int, int, bool, bool], ...]  # name, lo, hi, check lo, check hi
    children: tuple[tuple[str, bool], ...]


_plans: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        declared = BOUNDS[descriptor.name]
        narrower = [
            (f, *declared[f.name]) for f in integer_fields(descriptor) if declared[f.name] != TYPE_RANGES[f.type]
        ]
        plan = _Plan(
            scalars=tuple((f.name, lo, hi) for f, lo, hi in narrower if not _is_repeated(f)),
            columns=tuple(
                (f.name, lo, hi, lo > TYPE_RANGES[f.type][0], hi < TYPE_RANGES[f.type][1])
                for f, lo, hi in narrower
                if _is_repeated(f)
            ),
            children=tuple(
                (f.name, _is_repeated(f)) for f in descriptor.fields if f.type == FieldDescriptor.TYPE_MESSAGE
            ),
        )
        _plans[descriptor.full_name] = plan
    return plan


def check_field(message: Message, name: str) -> str | None:
    """One scalar field against its declared range."""
    lo, hi = BOUNDS[message.DESCRIPTOR.name][name]
    value = getattr(message, name)
    return None if lo <= value <= hi else f"{message.DESCRIPTOR.name}.{name} {value} is absurd (allowed {lo}..{hi})"


def check(message: Message) -> str | None:
    """The first integer outside its field's declared range, named by its path
    (e.g. "Batch.gpus[0].memory_used_bytes"), or None."""
    reason = _check(message)
    return None if reason is None else f"{message.DESCRIPTOR.name}.{reason}"


def _check(message: Message) -> str | None:
    # Paths are built only on the way out of a failure.
    descriptor = message.DESCRIPTOR
    plan = _plans.get(descriptor.full_name) or _plan(cast(Descriptor, descriptor))
    for name, lo, hi in plan.scalars:
        value = getattr(message, name)
        if not lo <= value <= hi:
            return f"{name} {value} is absurd (allowed {lo}..{hi})"
    for name, lo, hi, low_end, high_end in plan.columns:
        values = getattr(message, name)
        # One pass per column and per side that can be out of range.
        if values and ((low_end and min(values) < lo) or (high_end and max(values) > hi)):
            bad = next(v for v in values if not lo <= v <= hi)
            return f"{name} {bad} is absurd (allowed {lo}..{hi})"
    for name, repeated in plan.children:
        if repeated:
            for i, child in enumerate(getattr(message, name)):
                if reason := _check(child):
                    return f"{name}[{i}].{reason}"
        elif message.HasField(name) and (reason := _check(getattr(message, name))):
            return f"{name}.{reason}"
    return None
