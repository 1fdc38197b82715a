"""Every integer field of every telemetry message has a declared range
(scheduler/ingest/bounds.py), and nothing SQLite cannot hold gets past validation."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.ingest import bounds
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import validate_batch, validate_hello, validate_position
from neocloud.v1 import telemetry_pb2 as pb

T0 = 1_800_000_000_000_000
MESSAGES: list[Descriptor] = list(pb.DESCRIPTOR.message_types_by_name.values())


def test_every_integer_field_of_every_message_has_a_declared_range() -> None:
    fields = {(m.name, f.name) for m in MESSAGES for f in bounds.integer_fields(m)}
    declared = {(m, f) for m, fs in bounds.BOUNDS.items() for f in fs}
    assert fields - declared == set(), "integer fields without a bound in scheduler/ingest/bounds.py"
    assert declared - fields == set(), "bounds for fields telemetry.proto does not have"
    assert not any(m.nested_types for m in MESSAGES)  # else walk them too


def test_no_bound_admits_what_the_wire_type_or_the_store_cannot_hold() -> None:
    for m in MESSAGES:
        for f in bounds.integer_fields(m):
            lo, hi = bounds.BOUNDS[m.name][f.name]
            type_lo, type_hi = bounds.TYPE_RANGES[f.type]
            assert type_lo <= lo <= hi <= min(type_hi, bounds.INT64_MAX), (m.name, f.name)


def uint64_fields(message: Descriptor, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths to every uint64 field under a message (through message fields)."""
    out = []
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_UINT64:
            out.append((*path, f.name))
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            out += uint64_fields(f.message_type, (*path, f.name))
    return out


def set_path(message: object, path: tuple[str, ...], value: int) -> None:
    """Set the field at `path`, taking (or adding) the first element of repeated ones."""
    for name in path[:-1]:
        child = getattr(message, name)
        if hasattr(child, "add"):
            child = child[0] if len(child) else child.add()
        message = child
    target = getattr(message, path[-1])
    if hasattr(target, "append"):
        if len(target):
            target[0] = value
        else:
            target.append(value)
    else:
        setattr(message, path[-1], value)


@pytest.fixture
def backend() -> SimBackend:
    ticks = iter(range(1, 10**9))
    return SimBackend("n1", 2, load=0.5, clock_us=lambda: T0 + next(ticks) * 1_000_000)


@pytest.mark.parametrize("path", uint64_fields(pb.Hello.DESCRIPTOR))
@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
def test_a_hello_with_a_uint64_sqlite_cannot_hold_is_refused_naming_it(
    backend: SimBackend, path: tuple[str, ...], value: int
) -> None:
    msg = hello("n1", 7, backend.inventory(), "sim").hello
    set_path(msg, path, value)
    reason = validate_hello(msg)
    assert reason is not None and path[-1] in reason and str(value) in reason


@pytest.mark.parametrize(
    "path", [p for p in uint64_fields(pb.Batch.DESCRIPTOR) if p not in (("seq",), ("stream_epoch",))]
)
@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
def test_a_batch_with_a_uint64_sqlite_cannot_hold_is_rejected_naming_it(
    backend: SimBackend, path: tuple[str, ...], value: int
) -> None:
    node = Fleet().register(hello("n1", 7, backend.inventory(), "sim").hello, T0)
    batch = build_batch("n1", backend.inventory(), [backend.read(True)], T0 + 10**9)
    batch.gpus[0].processes.add(pid=7, used_memory_bytes=1)
    assert validate_batch(batch, node) is None
    set_path(batch, path, value)
    reason = validate_batch(batch, node)
    assert reason is not None and path[-1] in reason and str(value) in reason


@pytest.mark.parametrize("field", ["seq", "stream_epoch"])
def test_a_stream_position_sqlite_cannot_hold_is_refused(field: str) -> None:
    batch = pb.Batch(stream_epoch=7, seq=1)
    assert validate_position(batch) is None
    setattr(batch, field, 2**63)
    reason = validate_position(batch)
    assert reason is not None and field in reason


def test_int64_fields_may_not_be_negative(backend: SimBackend) -> None:
    node = Fleet().register(hello("n1", 7, backend.inventory(), "sim").hello, T0)
    batch = build_batch("n1", backend.inventory(), [backend.read(True)], T0 + 10**9)
    batch.events.add(uuid=batch.gpus[0].uuid, kind=pb.HEALTH_EVENT_KIND_XID, xid=13, timestamp_us=-1)
    reason = validate_batch(batch, node)
    assert reason is not None and "events[0].timestamp_us" in reason
