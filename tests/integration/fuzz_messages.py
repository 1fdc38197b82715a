"""Hypothesis strategies for the RPC fuzz suite: any protobuf message built from
its descriptor with hostile values, the same mutated or truncated on the wire,
and random bytes. Nothing here knows a service: the suite names the RPCs."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2
from hypothesis import strategies as st

import neocloud.v1
from neocloud.scheduler.ingest.bounds import TYPE_RANGES

# Every proto file the scheduler's services come from: a new one is fuzzed (and its limits checked) unasked.
PROTO_FILES: tuple[ModuleType, ...] = (
    *(
        importlib.import_module(f"neocloud.v1.{m.name}")
        for m in pkgutil.iter_modules(neocloud.v1.__path__)
        if m.name.endswith("_pb2")
    ),
    health_pb2,
)

_T = FieldDescriptor
HOSTILE_TEXT = (
    "",
    " ",
    "../../../etc/passwd",
    "%s%n%x",
    "'; DROP TABLE jobs; --",
    "\x00",
    "\ud7ff\U0010ffff",
    "acme",
    "globex",
    "inf",
    "nan",
    "-1",
    "9" * 400,
    "2026-13",
)


def texts(extra: Callable[[], Sequence[str]]) -> st.SearchStrategy[str]:
    """Short random text, fixed hostile words, ids the suite knows (another tenant's
    job, say; `extra` is read when drawn) and long runs of one character."""
    return st.one_of(
        st.text(max_size=24),
        st.sampled_from(HOSTILE_TEXT),
        st.integers(0, 63).map(lambda i: _nth(extra(), i)),
        st.tuples(st.characters(codec="utf-8"), st.sampled_from((63, 64, 65, 255, 256, 257, 1024, 4097, 10_000))).map(
            lambda cn: cn[0] * cn[1]
        ),
    )


def _nth(values: Sequence[str], i: int) -> str:
    return values[i % len(values)] if values else ""


def _integers(kind: int) -> st.SearchStrategy[int]:
    lo, hi = TYPE_RANGES[kind]
    edges = [v for v in (lo, hi, 0, 1, -1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi), st.integers(-3, 4096).filter(lambda v: lo <= v))


def _scalar(field: FieldDescriptor, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    if field.type == _T.TYPE_STRING:
        return text
    if field.type == _T.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from((257, 70_000)).map(lambda n: b"\xff" * n))
    if field.type == _T.TYPE_BOOL:
        return st.booleans()
    if field.type == _T.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if field.type == _T.TYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    return _integers(field.type)


def messages(descriptor: Descriptor, text: st.SearchStrategy[str], depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type, each field set or not, lists short or long."""
    cls = GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == _T.TYPE_MESSAGE:
            if depth > 4:
                continue
            value = messages(field.message_type, text, depth + 1)
        else:
            value = _scalar(field, text)
        if field.is_repeated:
            value = st.one_of(
                st.lists(value, max_size=3),
                st.tuples(value, st.sampled_from((65, 257, 1000))).map(lambda vn: [vn[0]] * vn[1]),
            )
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for entry in value:
                if isinstance(entry.value, Message):
                    target[entry.key].CopyFrom(entry.value)
                else:
                    target[entry.key] = entry.value
        elif field.is_repeated and field.type == _T.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        elif field.is_repeated:
            target.extend(value)
        elif field.type == _T.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


_EDITS = st.lists(
    st.tuples(st.sampled_from(("cut", "flip", "insert")), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    min_size=1,
    max_size=3,
)


def _mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    for op, at, noise in edits:
        at = at % (len(data) + 1)
        if op == "cut":
            data = data[:at]
        elif op == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([data[at] ^ (noise[0] or 1)]) + data[at + 1 :]
        else:
            data = data[:at] + noise + data[at:]
    return data


def payloads(descriptor: Descriptor, text: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, bytes): a generated message, the same mutated or truncated, or random bytes."""
    generated = messages(descriptor, text)
    return st.one_of(
        generated.map(lambda m: ("generated", m.SerializeToString())),
        st.tuples(generated, _EDITS).map(lambda me: ("mutated", _mutate(me[0].SerializeToString(), me[1]))),
        st.binary(max_size=256).map(lambda b: ("random", b)),
    )
