"""Every integer field of every telemetry message has a declared range
(scheduler/ingest/bounds.py), and nothing SQLite cannot hold gets past validation."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.domain.fleet import NodeState
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


def outside_every_range(message: Descriptor, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], int]]:
    """(path, a value just outside the declared range) for each end of each integer
    field under `message` whose declared range is narrower than its wire type's."""
    out = []
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            out += outside_every_range(f.message_type, (*path, f.name))
        elif f.type in bounds.TYPE_RANGES:
            lo, hi = bounds.BOUNDS[message.name][f.name]
            type_lo, type_hi = bounds.TYPE_RANGES[f.type]
            out += [((*path, f.name), lo - 1)] if lo > type_lo else []
            out += [((*path, f.name), hi + 1)] if hi < type_hi else []
    return out


def set_at(message: object, path: tuple[str, ...], value: int, position: int) -> None:
    """Set the field at `path`, in the element at `position` of every repeated field on the way."""
    for name in path[:-1]:
        message = getattr(message, name)
        if hasattr(message, "add"):
            message = message[position]
    target = getattr(message, path[-1])
    if hasattr(target, "append"):
        target[position] = value
    else:
        setattr(message, path[-1], value)


def every_field_batch(backend: SimBackend) -> tuple[NodeState, pb.Batch]:
    """A valid batch with two of everything repeated: GPUs, ticks, energy readings,
    buffered power samples, processes and health events; ECC counts set."""
    node = Fleet().register(hello("n1", 7, backend.inventory(), "sim").hello, T0)
    batch = build_batch("n1", backend.inventory(), [backend.read(True), backend.read(True)], T0 + 10**9)
    batch.dropped_samples_total = 3
    for series in batch.gpus:
        series.power_sample_us.extend([series.timestamp_us[0], series.timestamp_us[-1]])
        series.power_sample_mw.extend([300_000, 310_000])
        series.ecc_corrected_total, series.ecc_uncorrected_total = 1, 0
        del series.processes[:]
        series.processes.add(pid=7, used_memory_bytes=1)
        series.processes.add(pid=8, used_memory_bytes=2, pid_namespace=4026531836, namespace_pids=[8, 1])
        batch.events.add(uuid=series.uuid, kind=pb.HEALTH_EVENT_KIND_XID, xid=13, timestamp_us=T0)
    return node, batch


@pytest.mark.parametrize(("path", "value"), outside_every_range(pb.Batch.DESCRIPTOR), ids=str)
@pytest.mark.parametrize("position", [0, -1])
def test_every_declared_range_of_a_batch_is_enforced_naming_the_field(
    backend: SimBackend, path: tuple[str, ...], value: int, position: int
) -> None:
    # validate.py checks the ranges in its one pass over the batch (only those its
    # plausibility checks do not imply): a range tightened in the table and not there fails this.
    node, batch = every_field_batch(backend)
    assert validate_batch(batch, node) is None
    set_at(batch, path, value, position)
    reason = validate_batch(batch, node)
    assert reason is not None and path[-1] in reason and str(value) in reason


def test_a_valid_batch_is_checked_in_one_pass_without_the_generic_walk(
    backend: SimBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bounds.check walks every message of the batch again (~40 µs a batch of 8 GPUs,
    # a sixth of ingest's CPU); it only names what the one pass found wrong.
    node, batch = every_field_batch(backend)
    walked: list[object] = []
    monkeypatch.setattr(bounds, "check", lambda message: walked.append(message))
    assert validate_batch(batch, node) is None
    assert walked == []


@pytest.mark.parametrize("path", [("gpus", "memory_used_bytes"), ("gpus", "processes", "used_memory_bytes")])
def test_memory_is_bounded_on_a_gpu_that_reports_no_memory_total(backend: SimBackend, path: tuple[str, ...]) -> None:
    # Memory used is checked against the GPU's total, and against its range when there is none.
    node, batch = every_field_batch(backend)
    for gpu in node.gpus.values():
        gpu.memory_total_bytes = 0
    assert validate_batch(batch, node) is None
    set_at(batch, path, 2**63, -1)
    reason = validate_batch(batch, node)
    assert reason is not None and path[-1] in reason and str(2**63) in reason


@pytest.mark.parametrize(
    ("path", "value"), [(p, v) for p, v in outside_every_range(pb.Batch.DESCRIPTOR) if len(p) == 1], ids=str
)
def test_a_batch_without_samples_has_its_own_fields_bounded(
    backend: SimBackend, path: tuple[str, ...], value: int
) -> None:
    # No sample time to compare agent_time_us with: its range alone refuses it.
    node = Fleet().register(hello("n1", 7, backend.inventory(), "sim").hello, T0)
    batch = pb.Batch(node_id="n1", stream_epoch=7, seq=1, agent_time_us=T0)
    assert validate_batch(batch, node) is None
    setattr(batch, path[0], value)
    reason = validate_batch(batch, node)
    assert reason is not None and path[0] in reason and str(value) in reason
