"""The scheduler's side of Telemetry.Connect.

Per stream: a Hello (validated, and checked against the node's certificate),
then batches in sequence. Replays (seq already seen) are dropped, a gap ends
the stream, a batch with absurd values is acknowledged as rejected and changes
nothing. Acks are sent only after the commit that makes a batch durable, so an
ack is a promise that survives a scheduler crash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from neocloud.domain.clock import wall_clock_us
from neocloud.domain.fleet import NodeState
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import validate_batch, validate_hello
from neocloud.scheduler.store import telemetry as store
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc
from neocloud.wire import tls

logger = logging.getLogger(__name__)


class StreamRefused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(slots=True)
class Session:
    node: NodeState
    epoch: int
    task: asyncio.Task[object] | None
    acks: asyncio.Queue[pb.SchedulerMessage] = field(default_factory=asyncio.Queue)
    acked_sent: int = 0
    rejections: list[pb.Rejection] = field(default_factory=list)


class TelemetryService(pb_grpc.TelemetryServicer):
    def __init__(
        self,
        fleet: Fleet,
        db: sqlite3.Connection,
        require_peer_identity: bool,
        commit_interval_s: float = 0.1,
        clock_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        self.fleet = fleet
        self.sessions: dict[str, Session] = {}
        self._db = db
        self._require_identity = require_peer_identity
        self._commit_interval_s = commit_interval_s
        self._clock_us = clock_us
        # SQLite is used from this one thread only; ingest never waits on disk.
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="neocloud-store")
        self.commits_total = 0
        self.commit_failures_total = 0
        self.last_commit_s = 0.0

    async def Connect(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> None:
        session: Session | None = None
        try:
            session = await self._open(context)
            writer = asyncio.create_task(self._write_acks(session, context))
            try:
                while True:
                    message = await context.read()
                    if message is grpc.aio.EOF:
                        return
                    self._on_message(session, message)
            finally:
                writer.cancel()
        except StreamRefused as e:
            counts = self.fleet.counters.streams_refused
            counts[e.code.name] = counts.get(e.code.name, 0) + 1
            logger.warning("telemetry stream from %s refused: %s %s", context.peer(), e.code.name, e.details)
            await context.abort(e.code, e.details)
        finally:
            if session is not None and self.sessions.get(session.node.node_id) is session:
                del self.sessions[session.node.node_id]
                session.node.connected = False
                logger.info("node %s disconnected", session.node.node_id)

    async def _open(self, context: grpc.aio.ServicerContext) -> Session:
        first = await context.read()
        if first is grpc.aio.EOF:
            raise StreamRefused(grpc.StatusCode.FAILED_PRECONDITION, "stream closed before its Hello")
        if not first.HasField("hello"):
            raise StreamRefused(grpc.StatusCode.FAILED_PRECONDITION, "the first message of a stream must be a Hello")
        hello = first.hello
        reason = validate_hello(hello)
        if reason:
            raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, f"bad Hello: {reason}")
        peer = tls.peer_node_id(context)
        if self._require_identity and peer != hello.node_id:
            raise StreamRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate names node {peer!r} but the Hello says {hello.node_id!r}: "
                "a node reports only for itself",
            )
        for gpu in hello.gpus:
            owner = self.fleet.gpu_owner.get(gpu.uuid)
            if owner not in (None, hello.node_id) and owner in self.sessions:
                raise StreamRefused(
                    grpc.StatusCode.PERMISSION_DENIED, f"GPU {gpu.uuid} is reported by connected node {owner!r}"
                )
        node = self.fleet.register(hello, self._clock_us())
        previous = self.sessions.get(node.node_id)
        if previous is not None and previous.task is not None:
            logger.warning("node %s opened a new stream; closing its previous one", node.node_id)
            previous.task.cancel()
        session = Session(node, hello.stream_epoch, asyncio.current_task())
        self.sessions[node.node_id] = session
        node.connected = True
        session.acked_sent = node.durable_seq
        await context.write(pb.SchedulerMessage(ack=self._ack(session, node.durable_seq)))
        logger.info(
            "node %s connected: %d GPUs, %s backend, epoch %d resumes after seq %d",
            node.node_id,
            len(hello.gpus),
            hello.backend,
            hello.stream_epoch,
            node.durable_seq,
        )
        return session

    def _on_message(self, session: Session, message: pb.AgentMessage) -> None:
        if not message.HasField("batch"):
            raise StreamRefused(grpc.StatusCode.FAILED_PRECONDITION, "after the Hello a stream carries only batches")
        batch = message.batch
        node = session.node
        if batch.node_id != node.node_id:
            raise StreamRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"batch for node {batch.node_id[:128]!r} on {node.node_id!r}'s stream: a node reports only for itself",
            )
        if batch.stream_epoch != session.epoch:
            raise StreamRefused(
                grpc.StatusCode.INVALID_ARGUMENT, f"batch epoch {batch.stream_epoch} is not the Hello's {session.epoch}"
            )
        if batch.seq <= node.last_seq:
            self.fleet.counters.batches_duplicate += 1
            return
        if node.last_seq and batch.seq != node.last_seq + 1:
            raise StreamRefused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"batch seq {batch.seq} follows {node.last_seq}: batches in between are missing",
            )
        now = self._clock_us()
        reason = validate_batch(batch, node)
        if reason is None:
            self.fleet.apply_batch(node, batch, now)
            return
        logger.warning("rejected batch %d from %s: %s", batch.seq, node.node_id, reason)
        session.rejections.append(pb.Rejection(seq=batch.seq, reason=reason))
        node.last_seq = batch.seq
        self.fleet.counters.batches_rejected += 1
        self.fleet.dirty_nodes.add(node.node_id)

    def _ack(self, session: Session, acked_seq: int) -> pb.Ack:
        rejected = [r for r in session.rejections if r.seq <= acked_seq]
        session.rejections = [r for r in session.rejections if r.seq > acked_seq]
        return pb.Ack(
            stream_epoch=session.epoch, acked_seq=acked_seq, scheduler_time_us=self._clock_us(), rejected=rejected
        )

    async def _write_acks(self, session: Session, context: grpc.aio.ServicerContext) -> None:
        while True:
            await context.write(await session.acks.get())

    async def commit(self) -> None:
        """Make what was applied durable, then acknowledge it."""
        snap = self.fleet.snapshot_dirty()
        if not snap.empty():
            started = asyncio.get_running_loop().time()
            try:
                await asyncio.get_running_loop().run_in_executor(self._db_thread, store.write, self._db, snap)
            except Exception:
                self.commit_failures_total += 1
                logger.exception("telemetry commit failed; nothing acknowledged, retrying")
                self.fleet.restore(snap)
                return
            self.commits_total += 1
            self.last_commit_s = asyncio.get_running_loop().time() - started
            for node_id, (epoch, seq) in snap.seqs.items():
                node = self.fleet.nodes[node_id]
                if node.stream_epoch == epoch:
                    node.durable_seq = max(node.durable_seq, seq)
        for session in self.sessions.values():
            durable = session.node.durable_seq
            if durable > session.acked_sent:
                session.acked_sent = durable
                session.acks.put_nowait(pb.SchedulerMessage(ack=self._ack(session, durable)))

    async def run_commits(self) -> None:
        while True:
            await asyncio.sleep(self._commit_interval_s)
            await self.commit()

    def close(self) -> None:
        self._db_thread.shutdown(wait=True)
