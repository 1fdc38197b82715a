"""Malformed and hostile telemetry gets a clear status and changes nothing."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler import server
from neocloud.scheduler.ingest import service as ingest_service
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc
from tests.helpers import wait_until

EPOCH = 42


class RawStream:
    """Drives Telemetry.Connect one message at a time, as a hostile client would."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.call = pb_grpc.TelemetryStub(self._channel).Connect(self._requests())

    def _requests(self) -> Iterator[pb.AgentMessage]:
        while (message := self._outbox.get()) is not None:
            yield message

    def send(self, message: pb.AgentMessage) -> None:
        self._outbox.put(message)

    def recv(self) -> pb.SchedulerMessage:
        return next(self.call)

    def status(self) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            while True:
                next(self.call)
        return info.value.code(), info.value.details()

    def close(self) -> None:
        self._outbox.put(None)
        self._channel.close()


@pytest.fixture
def sched(scheduler_factory: Callable[..., BackgroundScheduler]) -> BackgroundScheduler:
    return scheduler_factory()


@pytest.fixture
def backend() -> SimBackend:
    ticks = iter(range(1, 10**9))
    return SimBackend("node-x", 2, load=0.5, clock_us=lambda: 1_800_000_000_000_000 + next(ticks) * 1_000_000)


def batch(backend: SimBackend, seq: int, node: str = "node-x", epoch: int = EPOCH) -> pb.AgentMessage:
    b = build_batch(node, backend.inventory(), [backend.read(True)], 1_900_000_000_000_000)
    b.stream_epoch, b.seq = epoch, seq
    return pb.AgentMessage(batch=b)


def open_stream(sched: BackgroundScheduler, backend: SimBackend) -> RawStream:
    stream = RawStream(sched.port)
    stream.send(hello("node-x", EPOCH, backend.inventory(), "sim"))
    assert stream.recv().ack.acked_seq == 0
    return stream


def fleet_energy(sched: BackgroundScheduler) -> dict[str, int]:
    node = sched.scheduler.telemetry.fleet.nodes.get("node-x")
    return {} if node is None else {u: g.energy.total_mj for u, g in node.gpus.items()}


def test_batch_before_hello_is_refused(sched: BackgroundScheduler, backend: SimBackend) -> None:
    stream = RawStream(sched.port)
    stream.send(batch(backend, 1))
    code, details = stream.status()
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "Hello" in details
    assert sched.scheduler.telemetry.fleet.nodes == {}


def test_bad_hello_is_refused_and_registers_nothing(sched: BackgroundScheduler, backend: SimBackend) -> None:
    stream = RawStream(sched.port)
    bad = hello("node-x", EPOCH, backend.inventory(), "sim")
    bad.hello.gpus[1].uuid = bad.hello.gpus[0].uuid
    stream.send(bad)
    code, details = stream.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unique" in details
    assert sched.scheduler.telemetry.fleet.nodes == {}


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (lambda b: batch(b, 1, node="node-y"), grpc.StatusCode.PERMISSION_DENIED, "reports only for itself"),
        (lambda b: batch(b, 1, epoch=EPOCH + 1), grpc.StatusCode.INVALID_ARGUMENT, "epoch"),
        (lambda b: hello("node-x", EPOCH, b.inventory(), "sim"), grpc.StatusCode.FAILED_PRECONDITION, "only batches"),
        (lambda b: pb.AgentMessage(), grpc.StatusCode.FAILED_PRECONDITION, "only batches"),
    ],
)
def test_protocol_violations_end_the_stream_with_a_status(
    sched: BackgroundScheduler, backend: SimBackend, message, code, words
) -> None:  # type: ignore[no-untyped-def]
    stream = open_stream(sched, backend)
    stream.send(message(backend))
    got, details = stream.status()
    assert got == code and words in details
    assert fleet_energy(sched) == {u.uuid: 0 for u in backend.inventory()}


def test_gap_duplicate_and_absurd_batches(sched: BackgroundScheduler, backend: SimBackend) -> None:
    stream = open_stream(sched, backend)
    stream.send(batch(backend, 1))
    stream.send(batch(backend, 2))
    assert stream.recv().ack.acked_seq == 2
    energy_after_two = fleet_energy(sched)
    assert all(v > 0 for v in energy_after_two.values())

    # A replay of seq 2 is dropped: nothing counted twice.
    stream.send(batch(backend, 2))
    # An absurd batch is acknowledged as rejected and changes nothing.
    absurd = batch(backend, 3)
    absurd.batch.gpus[0].energy[0].energy_mj += 10**12
    stream.send(absurd)
    ack = stream.recv().ack
    assert ack.acked_seq == 3 and [r.seq for r in ack.rejected] == [3]
    assert "more than twice the power limit" in ack.rejected[0].reason
    assert fleet_energy(sched) == energy_after_two
    counters = sched.scheduler.telemetry.fleet.counters
    assert (counters.batches_accepted, counters.batches_duplicate, counters.batches_rejected) == (2, 1, 1)

    # A gap means batches went missing: the stream ends, the agent must resend.
    stream.send(batch(backend, 7))
    code, details = stream.status()
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "missing" in details
    assert fleet_energy(sched) == energy_after_two


def test_garbage_bytes_do_not_hurt_the_server(sched: BackgroundScheduler, backend: SimBackend) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    raw = channel.stream_stream(
        "/neocloud.v1.Telemetry/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as info:
        list(raw(iter([b"\xff\xff\xff\xff not protobuf"])))
    assert info.value.code() != grpc.StatusCode.OK
    channel.close()
    # ... and the next node streams as usual.
    stream = open_stream(sched, backend)
    stream.send(batch(backend, 1))
    assert stream.recv().ack.acked_seq == 1
    stream.close()


def test_a_stream_that_sends_no_hello_ends_with_deadline_exceeded(sched: BackgroundScheduler) -> None:
    sched.scheduler.telemetry.hello_timeout_s = 0.3
    quiet = threading.Event()
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    # The client's own deadline only keeps a server without the Hello deadline from hanging the test.
    call = pb_grpc.TelemetryStub(channel).Connect(iter(quiet.wait, True), timeout=10)
    try:
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no Hello within 0.3 s" in info.value.details()
    finally:
        quiet.set()
        channel.close()


def test_the_concurrent_call_limit_is_resource_exhausted(
    scheduler_factory: Callable[..., BackgroundScheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "MAX_CONCURRENT_RPCS", 2)
    monkeypatch.setattr(ingest_service, "HELLO_TIMEOUT_S", 120.0)  # the idle calls must outlive the test
    sched = scheduler_factory()
    idle = _hold(sched.port, 2)  # each holds a call open, waiting for its Hello
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    health = health_pb2_grpc.HealthStub(channel)
    try:
        wait_until(lambda: _exhausted(health), timeout_s=10, what="the third call to be refused")
        for stream in idle:
            stream.close()
        wait_until(lambda: not _exhausted(health), timeout_s=10, what="a slot to free up")
    finally:
        channel.close()


def test_one_peer_holds_at_most_its_share_of_calls(
    scheduler_factory: Callable[..., BackgroundScheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "MAX_CALLS_PER_PEER", 2)
    monkeypatch.setattr(ingest_service, "HELLO_TIMEOUT_S", 120.0)  # the idle calls must outlive the test
    sched = scheduler_factory()
    idle = _hold(sched.port, 2)  # two connections, one host
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    health = health_pb2_grpc.HealthStub(channel)
    try:
        wait_until(lambda: _exhausted(health, "calls in progress"), timeout_s=10, what="the third call to be refused")
        for stream in idle:
            stream.close()
        wait_until(lambda: not _exhausted(health), timeout_s=10, what="the peer's calls to end")
    finally:
        channel.close()


def _hold(port: int, n: int) -> list[RawStream]:
    """`n` telemetry calls held open. A call can itself be refused while the server still
    counts a call of the scheduler's start-up (its readiness check); it is opened again."""
    streams = [RawStream(port) for _ in range(n)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)  # a refused call is done within this on loopback
        refused = [i for i, s in enumerate(streams) if s.call.done()]
        if not refused:
            return streams
        for i in refused:
            streams[i].close()
            streams[i] = RawStream(port)
    raise AssertionError(f"could not hold {n} calls open")


def _exhausted(health: health_pb2_grpc.HealthStub, details: str = "") -> bool:
    try:
        health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as e:
        assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and details in e.details(), e
        return True
    return False


def test_a_message_over_16_mib_is_resource_exhausted(sched: BackgroundScheduler) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}", options=[("grpc.max_send_message_length", -1)])
    submit = channel.unary_unary(
        "/neocloud.v1.JobService/Submit", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        with pytest.raises(grpc.RpcError) as info:
            submit(b"\x12" + b"\x00" * (server.MAX_MESSAGE_BYTES + 1), timeout=20)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        channel.close()


def test_a_method_without_an_implementation_is_unimplemented_without_a_traceback(
    sched: BackgroundScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    # grpc's async health servicer has no Health.List; its generated base raises NotImplementedError.
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(
                "/grpc.health.v1.Health/List", request_serializer=lambda b: b, response_deserializer=lambda b: b
            )(b"", timeout=10)
    finally:
        channel.close()
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert not [r for r in caplog.records if r.exc_info]
