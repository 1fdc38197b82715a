"""The hostile node of `neocloud bench chaos`: over and over, through the same
proxy as the honest agents, it sends bytes that are no AgentMessage, a Hello with
an absurd power limit, a Hello naming another node's GPU, (with mTLS) a Hello in
another node's name, and a batch with out-of-range utilisation. Each attempt
must end with its documented status (or, for the batch, a rejection in the ack);
a fault of the chaos schedule may interrupt one (UNAVAILABLE and the like)."""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import grpc

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu import SimBackend
from neocloud.v1 import telemetry_pb2 as pb

logger = logging.getLogger(__name__)

NODE_ID = "chaos-hostile"
CONNECT = "/neocloud.v1.Telemetry/Connect"
EXPECTED = {
    "garbage": "INVALID_ARGUMENT",
    "absurd_hello": "INVALID_ARGUMENT",
    "stolen_gpu": "PERMISSION_DENIED",
    "impersonation": "PERMISSION_DENIED",
    "absurd_batch": "rejected",
}
# What a cut, reset, blackhole or a scheduler being killed does to an attempt.
INTERRUPTED = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED", "UNKNOWN", "INTERNAL"}


class HostileNode:
    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None, victim: str, seed: int) -> None:
        self._target = target
        self._credentials = credentials
        self._victim = victim
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-hostile", daemon=True)
        self.outcomes: Counter[str] = Counter()  # "kind:outcome"
        self.unexpected: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        kinds = [k for k in EXPECTED if k != "impersonation" or self._credentials is not None]
        order: list[str] = []
        while not self._stop.wait(self._rng.uniform(0.2, 1.0)):
            if not order:  # every kind once per round, in a seeded order
                order = self._rng.sample(kinds, len(kinds))
            kind = order.pop()
            outcome = self._attempt(kind)
            self.outcomes[f"{kind}:{outcome}"] += 1
            if outcome != EXPECTED[kind] and outcome not in INTERRUPTED:
                self.unexpected.append(f"{kind}: {outcome}")
                logger.error("hostile %s ended with %s, not %s", kind, outcome, EXPECTED[kind])

    def _channel(self) -> grpc.Channel:
        if self._credentials is None:
            return grpc.insecure_channel(self._target)
        return grpc.secure_channel(self._target, self._credentials)

    def _attempt(self, kind: str) -> str:
        epoch = self._rng.randrange(1, 2**62)
        own = SimBackend(NODE_ID, 2).inventory()
        messages: list[bytes]
        if kind == "garbage":
            messages = [bytes(self._rng.randrange(256) for _ in range(64))]
        elif kind == "absurd_hello":
            msg = hello(NODE_ID, epoch, own, "sim")
            msg.hello.gpus[0].power_limit_mw = 0
            messages = [msg.SerializeToString()]
        elif kind == "stolen_gpu":
            stolen = [own[0], replace(SimBackend(self._victim, 1).inventory()[0], index=1)]
            messages = [hello(NODE_ID, epoch, stolen, "sim").SerializeToString()]
        elif kind == "impersonation":
            victims = SimBackend(self._victim, 1).inventory()
            messages = [hello(self._victim, epoch, victims, "sim").SerializeToString()]
        else:
            sim = SimBackend(NODE_ID, 2, load=0.5)
            batch = build_batch(NODE_ID, own, [sim.read(True), sim.read(False)], sim.now_us())
            batch.stream_epoch, batch.seq = epoch, 1
            batch.gpus[0].gpu_util_percent[0] = 250  # percent
            messages = [hello(NODE_ID, epoch, own, "sim").SerializeToString(), _wrap(batch)]
        return self._send(messages, expect_acks=len(messages))

    def _send(self, messages: list[bytes], expect_acks: int) -> str:
        """Send raw messages; the outcome is the status code's name, or "rejected" when an ack
        rejects a batch."""
        done = threading.Event()

        def requests() -> Iterator[bytes]:
            yield from messages
            done.wait(10)  # keep the stream open until the answers came

        with self._channel() as channel:
            connect = channel.stream_stream(
                CONNECT, request_serializer=lambda b: b, response_deserializer=pb.SchedulerMessage.FromString
            )
            acks = 0
            try:
                for answer in connect(requests(), timeout=15):
                    acks += 1
                    if answer.ack.rejected:
                        return "rejected"
                    if acks >= expect_acks:
                        return "accepted"
                return "OK"
            except grpc.RpcError as e:
                return e.code().name
            finally:
                done.set()


def _wrap(batch: pb.Batch) -> bytes:
    return pb.AgentMessage(batch=batch).SerializeToString()
