"""One node's hostile or unstorable telemetry ends that node's stream with a
documented status; every other node keeps being acknowledged (issue 11)."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store import telemetry as store
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc
from tests.helpers import wait_until

EPOCH = 42
TOO_BIG = 2**63  # the smallest integer SQLite cannot hold
T_US = 1_800_000_000_000_000


class Node:
    """One node's raw stream, driven a message at a time."""

    def __init__(self, port: int, node_id: str, epoch: int = EPOCH) -> None:
        self.node_id, self.epoch, self.seq = node_id, epoch, 0
        ticks = iter(range(1, 10**9))
        self.backend = SimBackend(node_id, 2, load=0.5, clock_us=lambda: T_US + next(ticks) * 1_000_000)
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.call = pb_grpc.TelemetryStub(self._channel).Connect(self._requests())
        # Replies (and, last, the status) are read on a thread, so that a test
        # waits a bounded time for each and a hang fails instead of blocking.
        self._inbox: queue.Queue[pb.SchedulerMessage | tuple[grpc.StatusCode, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for message in self.call:
                self._inbox.put(message)
        except grpc.RpcError as e:
            self._inbox.put((e.code(), e.details()))
        else:
            self._inbox.put((grpc.StatusCode.OK, ""))

    def _requests(self) -> Iterator[pb.AgentMessage]:
        while (message := self._outbox.get()) is not None:
            yield message

    def hello(self) -> pb.AgentMessage:
        return hello(self.node_id, self.epoch, self.backend.inventory(), "sim")

    def batch(self) -> pb.AgentMessage:
        self.seq += 1
        b = build_batch(self.node_id, self.backend.inventory(), [self.backend.read(True)], 1_900_000_000_000_000)
        b.stream_epoch, b.seq = self.epoch, self.seq
        return pb.AgentMessage(batch=b)

    def send(self, message: pb.AgentMessage) -> None:
        self._outbox.put(message)

    def recv(self, timeout_s: float = 10.0) -> pb.SchedulerMessage:
        try:
            got = self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"{self.node_id} got nothing in {timeout_s} s") from None
        assert isinstance(got, pb.SchedulerMessage), f"{self.node_id}'s stream ended: {got}"
        return got

    def open(self) -> Node:
        self.send(self.hello())
        assert self.recv().ack.acked_seq == 0
        return self

    def stream_one(self) -> pb.Ack:
        """Send the next batch and wait for its ack."""
        self.send(self.batch())
        ack = self.recv().ack
        assert ack.acked_seq == self.seq
        return ack

    def status(self, timeout_s: float = 10.0) -> tuple[grpc.StatusCode, str]:
        """The status the stream ends with, past any replies (fails if it hangs)."""
        while True:
            try:
                got = self._inbox.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"{self.node_id}'s stream got no status in {timeout_s} s: it hangs") from None
            if not isinstance(got, pb.SchedulerMessage):
                return got

    def close(self) -> None:
        self._outbox.put(None)
        self._channel.close()


@pytest.fixture
def sched(scheduler_factory: Callable[..., BackgroundScheduler]) -> BackgroundScheduler:
    return scheduler_factory()


def nodes_in_store(sched: BackgroundScheduler) -> dict[str, int]:
    db = sqlite3.connect(sched.scheduler.config.db_path)
    try:
        return dict(db.execute("SELECT node_id, last_seq FROM nodes").fetchall())
    finally:
        db.close()


# --- (a) integers SQLite cannot hold never reach it -----------------------------------


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda h: setattr(h, "stream_epoch", TOO_BIG), "stream_epoch"),
        (lambda h: setattr(h.gpus[1], "memory_total_bytes", 2**64 - 1), "memory_total_bytes"),
    ],
)
def test_a_hello_with_an_integer_sqlite_cannot_hold_is_refused(
    sched: BackgroundScheduler, mutate: Callable[[pb.Hello], None], field: str
) -> None:
    good = Node(sched.port, "node-good").open()
    hostile = Node(sched.port, "node-bad")
    message = hostile.hello()
    mutate(message.hello)
    hostile.send(message)
    code, details = hostile.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details
    assert "node-bad" not in sched.scheduler.telemetry.fleet.nodes
    for _ in range(3):
        good.stream_one()
    wait_until(lambda: nodes_in_store(sched).get("node-good") == 3, what="node-good's batches in the store")
    assert "node-bad" not in nodes_in_store(sched)
    good.close()
    hostile.close()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: setattr(b, "dropped_samples_total", TOO_BIG), "dropped_samples_total"),
        (lambda b: b.gpus[0].memory_used_bytes.__setitem__(0, 2**64 - 1), "memory_used_bytes"),
        (lambda b: setattr(b.gpus[0], "ecc_corrected_total", TOO_BIG), "ecc_corrected_total"),
        (lambda b: b.gpus[0].processes.add(pid=7, used_memory_bytes=TOO_BIG), "used_memory_bytes"),
    ],
)
def test_a_batch_with_an_integer_sqlite_cannot_hold_is_rejected(
    sched: BackgroundScheduler, mutate: Callable[[pb.Batch], None], field: str
) -> None:
    good = Node(sched.port, "node-good").open()
    hostile = Node(sched.port, "node-bad").open()
    hostile.stream_one()
    before = {u: g.energy.total_mj for u, g in sched.scheduler.telemetry.fleet.nodes["node-bad"].gpus.items()}
    message = hostile.batch()
    mutate(message.batch)
    hostile.send(message)
    ack = hostile.recv().ack
    assert ack.acked_seq == 2 and [r.seq for r in ack.rejected] == [2]
    assert field in ack.rejected[0].reason
    after = {u: g.energy.total_mj for u, g in sched.scheduler.telemetry.fleet.nodes["node-bad"].gpus.items()}
    assert after == before
    for _ in range(3):
        good.stream_one()
    hostile.stream_one()  # the hostile node itself carries on with good batches
    wait_until(lambda: nodes_in_store(sched) == {"node-good": 3, "node-bad": 3}, what="both nodes in the store")
    good.close()
    hostile.close()


@pytest.mark.parametrize("seq", [TOO_BIG, 2**64 - 1])
def test_a_first_seq_sqlite_cannot_hold_ends_the_stream(sched: BackgroundScheduler, seq: int) -> None:
    good = Node(sched.port, "node-good").open()
    hostile = Node(sched.port, "node-bad").open()
    message = hostile.batch()
    message.batch.seq = seq
    hostile.send(message)
    code, details = hostile.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "seq" in details
    for _ in range(3):
        good.stream_one()
    wait_until(lambda: nodes_in_store(sched).get("node-good") == 3, what="node-good's batches in the store")
    assert nodes_in_store(sched).get("node-bad") == 0
    good.close()
    hostile.close()


# --- (b) a store error caused by one stream ends that stream only ----------------------


def test_a_node_whose_data_the_store_refuses_does_not_stall_the_others(
    sched: BackgroundScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = store.write

    def write(db: sqlite3.Connection, snap: store.Snapshot) -> None:
        # Data that passes validation but that this store cannot hold, as a
        # value beyond a column's range or a constraint would be.
        if any(row[0] == "node-bad" for row in snap.nodes):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        real_write(db, snap)

    monkeypatch.setattr(store, "write", write)
    service = sched.scheduler.telemetry
    good = Node(sched.port, "node-good").open()
    good.stream_one()
    hostile = Node(sched.port, "node-bad")
    hostile.send(hostile.hello())
    hostile.recv()  # the welcome ack (nothing durable yet)
    hostile.send(hostile.batch())
    code, details = hostile.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "store" in details and "node-bad" in details
    # ... while the other node is acknowledged throughout.
    for _ in range(5):
        good.stream_one()
    assert service.store_refusals_total == 1
    assert service.fleet.counters.streams_refused.get("INVALID_ARGUMENT") == 1
    # The refused data was dropped, not kept in memory to poison the next commit.
    assert "node-bad" not in service.fleet.nodes
    wait_until(lambda: nodes_in_store(sched).get("node-good") == 6, what="node-good's batches in the store")
    assert "node-bad" not in nodes_in_store(sched)
    # The hostile node may come back and is refused again, alone.
    again = Node(sched.port, "node-bad")
    again.send(again.hello())
    again.recv()
    assert again.status()[0] == grpc.StatusCode.INVALID_ARGUMENT
    good.stream_one()
    for n in (good, hostile, again):
        n.close()


def test_a_refused_node_goes_back_to_what_was_committed(
    sched: BackgroundScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = sched.scheduler.telemetry
    node = Node(sched.port, "node-bad").open()
    node.stream_one()
    node.stream_one()
    committed = {u: g.energy.total_mj for u, g in service.fleet.nodes["node-bad"].gpus.items()}
    real_write = store.write

    def write(db: sqlite3.Connection, snap: store.Snapshot) -> None:
        if any(row[0] == "node-bad" for row in snap.nodes):
            raise sqlite3.IntegrityError("NOT NULL constraint failed")
        real_write(db, snap)

    monkeypatch.setattr(store, "write", write)
    node.send(node.batch())
    code, details = node.status()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nothing after seq 2 was kept" in details
    back = service.fleet.nodes["node-bad"]
    assert (back.last_seq, back.durable_seq, back.connected) == (2, 2, False)
    assert {u: g.energy.total_mj for u, g in back.gpus.items()} == committed
    monkeypatch.undo()
    # Once the store takes its data again, the node resumes where its last commit left it.
    again = Node(sched.port, "node-bad")
    again.send(again.hello())
    assert again.recv().ack.acked_seq == 2
    node.close()
    again.close()


def test_a_store_wide_error_is_retried_not_blamed_on_a_node(
    sched: BackgroundScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = store.write
    failures = iter(range(3))

    def write(db: sqlite3.Connection, snap: store.Snapshot) -> None:
        if next(failures, None) is not None:
            raise sqlite3.OperationalError("database is locked")
        real_write(db, snap)

    good = Node(sched.port, "node-good").open()
    monkeypatch.setattr(store, "write", write)
    good.stream_one()  # acked once the store recovers
    assert sched.scheduler.telemetry.commit_failures_total >= 3
    assert sched.scheduler.telemetry.store_refusals_total == 0
    good.close()


# --- (c) a replaced stream gets a status ------------------------------------------------


def test_a_replaced_stream_ends_with_aborted_naming_the_newer_one(sched: BackgroundScheduler) -> None:
    first = Node(sched.port, "node-x").open()
    first.stream_one()
    second = Node(sched.port, "node-x", epoch=EPOCH + 1).open()
    code, details = first.status()
    assert code == grpc.StatusCode.ABORTED
    assert "newer stream" in details and f"epoch {EPOCH + 1}" in details and "127.0.0.1" in details
    second.stream_one()
    first.close()
    second.close()


# --- (d) a message that does not decode -------------------------------------------------


@pytest.mark.parametrize("first", [True, False])
def test_an_undecodable_message_is_invalid_argument_without_a_traceback(
    sched: BackgroundScheduler, caplog: pytest.LogCaptureFixture, first: bool
) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    raw = channel.stream_stream(
        "/neocloud.v1.Telemetry/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    greeting = hello("node-x", EPOCH, SimBackend("node-x", 2).inventory(), "sim").SerializeToString()
    messages = [b"\xff"] if first else [greeting, b"\xff"]
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as info:
        list(raw(iter(messages)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not decode" in info.value.details()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert len([r for r in caplog.records if "does not decode" in r.getMessage()]) == 1
    channel.close()
    good = Node(sched.port, "node-good").open()
    good.stream_one()
    good.close()


def test_refusals_are_logged_at_a_bounded_rate(sched: BackgroundScheduler, caplog: pytest.LogCaptureFixture) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{sched.port}")
    raw = channel.stream_stream(
        "/neocloud.v1.Telemetry/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            with pytest.raises(grpc.RpcError) as info:
                list(raw(iter([b"\xff"])))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = [r for r in caplog.records if "does not decode" in r.getMessage()]
    assert 1 <= len(lines) <= 20
    assert sched.scheduler.telemetry.fleet.counters.streams_refused["INVALID_ARGUMENT"] == 50
    channel.close()
