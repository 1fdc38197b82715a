"""Every field of every API request has a size limit, checked before its
handler runs; bad bytes and oversized fields get INVALID_ARGUMENT naming the
field, with one log line and no traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health_pb2

from neocloud.domain.errors import ResourceExhaustedError
from neocloud.scheduler.api import errors, limits
from neocloud.scheduler.api.calls import CallsPerPeer
from neocloud.scheduler.api.errors import MAX_DETAILS_BYTES, short
from neocloud.scheduler.ingest.service import RateLimitedLog
from neocloud.v1 import admin_pb2 as apb
from neocloud.v1 import jobs_pb2 as jpb
from neocloud.v1 import telemetry_pb2
from tests.api_server import ApiServer
from tests.integration.fuzz_messages import PROTO_FILES

# Every service the scheduler serves: the interceptor checks the unary requests (of Telemetry,
# a request stream, bounds.py checks the integers), but every message can be checked.
FILES = PROTO_FILES


def request_messages() -> Iterator[Descriptor]:
    """Every message a request of these services can hold, nested ones and map entries included."""
    seen: set[str] = set()
    todo = [m.input_type for f in FILES for s in f.DESCRIPTOR.services_by_name.values() for m in s.methods]
    while todo:
        message = todo.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        yield message
        todo.extend(f.message_type for f in message.fields if f.message_type is not None)


def test_every_field_of_every_request_has_a_limit() -> None:
    fields = [f for m in request_messages() for f in m.fields]
    assert len(fields) > 30  # the walk reached the nested messages (JobSpec, its env entries)
    for field in fields:
        limit = limits.limit_of(field)  # raises for a kind of field it cannot bound
        if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            # A whole file (a rate card) is the one text allowed more, and still bounded.
            most = 1 << 20 if field.full_name == "neocloud.v1.ApplyRateCardRequest.yaml" else 4096
            assert limit.length is not None and 0 < limit.length <= most, field.full_name
        if field.is_repeated:
            assert limit.count is not None and 0 < limit.count <= 256, field.full_name
        if field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            assert limit.highest == 2**63 - 1, field.full_name


def test_the_overrides_name_fields_that_exist() -> None:
    names = {f.full_name for m in request_messages() for f in m.fields}
    assert set(limits.LENGTHS) <= names
    assert set(limits.COUNTS) <= names


def test_a_kind_of_field_without_a_rule_is_an_error() -> None:
    group = FieldDescriptor.TYPE_GROUP
    field = next(f for f in jpb.JobSpec.DESCRIPTOR.fields if f.name == "gpu_model")
    fake = type("Field", (), {"type": group, "full_name": field.full_name, "is_repeated": False})()
    with pytest.raises(ValueError, match="no limit"):
        limits.limit_of(fake)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (apb.SetSettingRequest(key="max_requeues", value="9" * 10_000), "SetSettingRequest.value has 10000 characters"),
        (jpb.SubmitJobRequest(spec=jpb.JobSpec(command=["x"] * 300)), "SubmitJobRequest.spec.command has 300 entries"),
        (jpb.SubmitJobRequest(spec=jpb.JobSpec(command=["ls", "y" * 5000])), "spec.command[1] has 5000 characters"),
        (jpb.SubmitJobRequest(spec=jpb.JobSpec(env={"B" * 300: "c"})), "spec.env[0].key has 300 characters"),
        (jpb.SubmitJobRequest(spec=jpb.JobSpec(env={"A": "b" * 5000})), "spec.env[0].value has 5000 characters"),
        (jpb.ListJobsRequest(states=[1] * 65), "ListJobsRequest.states has 65 entries (at most 64)"),
        (apb.CordonNodeRequest(node_id="n", reason="r" * 1025), "reason has 1025 characters (at most 1024)"),
    ],
)
def test_check_names_the_field_over_its_limit(request_: object, reason: str) -> None:
    assert reason in (limits.check(request_) or "")  # type: ignore[arg-type]


def test_requests_within_their_limits_pass() -> None:
    spec = jpb.JobSpec(command=["x" * 4096] * 256, env={f"K{i}": "v" * 4096 for i in range(64)}, gpu_model="H200")
    assert limits.check(jpb.SubmitJobRequest(spec=spec, client_request_id="r" * 128)) is None
    assert limits.check(apb.CordonNodeRequest(node_id="n", reason="r" * 1024)) is None
    assert limits.check(telemetry_pb2.Hello(node_id="n")) is None  # any message can be checked


def test_details_are_cut_to_what_a_client_accepts() -> None:
    assert short("ok") == "ok"
    cut = short("é" * 10_000)
    assert len(cut.encode()) <= MAX_DETAILS_BYTES and cut.endswith("...")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    server = ApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


def test_a_10000_character_setting_is_invalid_argument_not_resource_exhausted(api: ApiServer) -> None:
    # The handler's message used to echo the value into a trailer larger than the
    # client's 16 KiB limit, which the client reports as RESOURCE_EXHAUSTED.
    for value in ("9" * 10_000, "é" * 10_000):
        with pytest.raises(grpc.RpcError) as info:
            api.admin.SetSetting(apb.SetSettingRequest(key="max_requeues", value=value), metadata=api.auth("operator"))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "SetSettingRequest.value has 10000 characters (at most 64)" in info.value.details()


@pytest.mark.parametrize(
    "method",
    [
        "/neocloud.v1.JobService/Submit",
        "/neocloud.v1.JobService/Watch",  # a response stream
        "/neocloud.v1.AdminService/SetSetting",
        "/neocloud.v1.AdminService/CreateTenant",
    ],
)
def test_undecodable_requests_are_invalid_argument_with_one_log_line(
    api: ApiServer, method: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = api.channel.unary_stream if method.endswith("Watch") else api.channel.unary_unary
    raw = call(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    monkeypatch.setattr(errors, "_refusals", RateLimitedLog(log=errors.logger))  # a full bucket of log lines
    with caplog.at_level(logging.WARNING), pytest.raises(grpc.RpcError) as info:
        reply = raw(b"\xff\xff", metadata=api.auth("operator"), timeout=10)
        if method.endswith("Watch"):
            list(reply)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request does not decode as neocloud.v1.")
    refusals = [r for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(refusals) == 1 and method in refusals[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_an_undecodable_message_in_a_request_stream_is_invalid_argument() -> None:
    """A client-streaming method with a generated deserializer (none of ours has one
    yet: Telemetry brings its own that never raises)."""

    async def count(requests: Any, context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        async for _ in requests:
            pass
        return health_pb2.HealthCheckResponse()

    async def run() -> grpc.aio.AioRpcError:
        server = grpc.aio.server(interceptors=[errors.ErrorInterceptor()])
        handler = grpc.stream_unary_rpc_method_handler(
            count,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Count", {"Count": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.stream_unary("/test.Count/Count", request_serializer=lambda b: b)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(iter([b"", b"\xff\xff"]), timeout=10)
                return info.value
        finally:
            await server.stop(0)

    error = asyncio.run(run())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("request does not decode as grpc.health.v1.HealthCheckRequest (2 bytes)")


def test_calls_are_counted_per_host_not_per_connection() -> None:
    calls = CallsPerPeer(2)
    a = [calls.enter(f"ipv4:10.0.0.1:{port}") for port in (1000, 1001)]
    with pytest.raises(ResourceExhaustedError, match=r"ipv4:10\.0\.0\.1 has 2 calls in progress"):
        calls.enter("ipv4:10.0.0.1:1002")
    calls.enter("ipv4:10.0.0.2:1000")  # another host has its own share
    calls.leave(a[0])
    assert calls.held("ipv4:10.0.0.1:9") == 1
    calls.enter("ipv4:10.0.0.1:1003")
    assert CallsPerPeer(None).enter("ipv4:10.0.0.1:1") == "ipv4:10.0.0.1"  # no limit: counted only
