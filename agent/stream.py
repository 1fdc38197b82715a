"""The agent's side of Telemetry.Connect: sends spooled batches, applies acks,
and reconnects with capped exponential backoff and jitter whenever the stream
breaks. What is sent always comes from the spool, so a break loses nothing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from neocloud.agent.spool import Spool
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# Keepalive notices a scheduler that vanished without closing the socket.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


@dataclass(slots=True)
class StreamStats:
    connected: bool = False
    sessions_total: int = 0
    batches_sent_total: int = 0
    acks_total: int = 0
    rejected_total: int = 0
    last_ack_unix_s: float = 0.0


class StreamClient:
    def __init__(
        self,
        target: str,
        spool: Spool,
        hello: pb.AgentMessage,
        credentials: grpc.ChannelCredentials | None,
        window: int = 128,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        server_name: str | None = None,
    ) -> None:
        self._target = target
        self._spool = spool
        self._hello = hello
        self._credentials = credentials
        self._window = window
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._stop = threading.Event()
        self._acked = threading.Condition()
        self._acked_seq = 0
        self._call: grpc.Future | None = None
        self.stats = StreamStats()

    def run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            welcomed = self._session()
            if self._stop.is_set():
                break
            attempt = 0 if welcomed else attempt + 1
            delay = min(self._backoff_max_s, self._backoff_initial_s * 2**attempt) * random.uniform(0.5, 1.0)
            logger.info("reconnecting to %s in %.1f s", self._target, delay)
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        with self._acked:
            self._acked.notify_all()

    def _channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self._target, options=self._options)
        return grpc.secure_channel(self._target, self._credentials, options=self._options)

    def _session(self) -> bool:
        """One stream, until it breaks; returns whether the scheduler answered."""
        welcomed = threading.Event()
        done = threading.Event()
        self.stats.sessions_total += 1
        with self._channel() as channel:
            call = pb_grpc.TelemetryStub(channel).Connect(self._requests(welcomed, done))
            self._call = call
            try:
                for message in call:
                    if message.HasField("ack"):
                        self._on_ack(message.ack)
                        if not welcomed.is_set():
                            welcomed.set()
                            self.stats.connected = True
                            logger.info("streaming to %s (scheduler has seq %d)", self._target, message.ack.acked_seq)
            except grpc.RpcError as e:
                if not self._stop.is_set():
                    logger.warning("telemetry stream to %s broke: %s %s", self._target, e.code(), e.details())
            finally:
                done.set()
                self._call = None
                self.stats.connected = False
                with self._acked:
                    self._acked.notify_all()
        return welcomed.is_set()

    def _requests(self, welcomed: threading.Event, done: threading.Event) -> Iterator[pb.AgentMessage]:
        yield self._hello
        while not welcomed.wait(0.5):
            if done.is_set() or self._stop.is_set():
                return
        sent = self._acked_seq
        while not (done.is_set() or self._stop.is_set()):
            with self._acked:
                room = self._window - (sent - self._acked_seq)
                if room <= 0:
                    self._acked.wait(0.5)
                    continue
            rows = self._spool.pending(sent, room)
            if not rows:
                self._spool.wait_for_append(sent, 0.5)
                continue
            for seq, data in rows:
                yield pb.AgentMessage(batch=pb.Batch.FromString(data))
                sent = seq
                self.stats.batches_sent_total += 1

    def _on_ack(self, ack: pb.Ack) -> None:
        for rejection in ack.rejected:
            logger.error("scheduler rejected batch %d: %s", rejection.seq, rejection.reason)
        self._spool.ack(ack.stream_epoch, ack.acked_seq, rejected=len(ack.rejected))
        self.stats.acks_total += 1
        self.stats.rejected_total += len(ack.rejected)
        self.stats.last_ack_unix_s = time.time()
        with self._acked:
            self._acked_seq = max(self._acked_seq, ack.acked_seq)
            self._acked.notify_all()
