"""The scheduler's side of Telemetry.Connect.

Per stream: a Hello (validated, and checked against the node's certificate),
then batches in sequence. Replays (seq already seen) are dropped, a gap ends
the stream, a batch with absurd values is acknowledged as rejected and changes
nothing. Acks are sent only after the commit that makes a batch durable, so an
ack is a promise that survives a scheduler crash.

Every stream that ends early ends with a status (and one log line, at a
bounded rate): a message that does not decode, a malformed Hello or a seq the
store cannot hold get INVALID_ARGUMENT; a stream replaced by a newer one of the
same node gets ABORTED; a node whose data the store refuses (isolation.py)
gets INVALID_ARGUMENT and goes back to what was last committed, while every
other node's data is committed and acknowledged. A node whose certificate is
revoked (wire/revocation.py) gets UNAUTHENTICATED before its Hello is read, and
an open stream of it is ended so by `end_revoked`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from neocloud.domain.clock import wall_clock_us
from neocloud.domain.durations import Durations
from neocloud.domain.fleet import NodeState
from neocloud.scheduler.ingest import isolation
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.validate import validate_batch, validate_hello, validate_position
from neocloud.scheduler.store import telemetry as store
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc
from neocloud.wire import revocation, tls

logger = logging.getLogger(__name__)


SERVICE = pb.DESCRIPTOR.services_by_name["Telemetry"].full_name
# Refusal log lines: a burst of this many, then one per LOG_EVERY_S (with a count
# of those left out), so that a fuzzer or a flapping node cannot flood the log.
LOG_BURST = 10
LOG_EVERY_S = 6.0
# A stream must open with its Hello within this long, or it ends with DEADLINE_EXCEEDED:
# a connection that opens streams and sends nothing holds no call slot for long.
HELLO_TIMEOUT_S = 10.0


class StreamRefused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Undecodable:
    """What the request deserializer hands over for bytes that are not an AgentMessage."""

    def __init__(self, size: int, error: str) -> None:
        self.size = size
        self.error = error


def decode_agent_message(data: bytes) -> pb.AgentMessage | Undecodable:
    """Never raises: an exception in a deserializer ends the call with INTERNAL
    and a traceback inside grpc, before the handler could say what was wrong."""
    try:
        return pb.AgentMessage.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        return Undecodable(len(data), str(e)[:100])


def add_to_server(service: TelemetryService, server: grpc.aio.Server) -> None:
    """Registers Telemetry.Connect (in place of the generated
    add_TelemetryServicer_to_server) with a deserializer that never raises."""
    handlers = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            service.Connect,
            request_deserializer=decode_agent_message,
            response_serializer=pb.SchedulerMessage.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class RateLimitedLog:
    """A token bucket for one kind of log line."""

    def __init__(self, burst: int = LOG_BURST, every_s: float = LOG_EVERY_S, log: logging.Logger = logger) -> None:
        self._burst, self._every_s, self._log = burst, every_s, log
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) / self._every_s)
        self._at = now
        if self._tokens < 1:
            self.suppressed += 1
            return
        self._tokens -= 1
        if self.suppressed:
            msg += " (%d similar lines left out)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._log.warning(msg, *args)


@dataclass(slots=True)
class Session:
    node: NodeState
    epoch: int
    task: asyncio.Task[object] | None
    acks: asyncio.Queue[pb.SchedulerMessage] = field(default_factory=asyncio.Queue)
    acked_sent: int = 0
    rejections: list[pb.Rejection] = field(default_factory=list)
    # Set (and the task cancelled) to end the stream from outside it.
    ending: StreamRefused | None = None
    cert_serial: int | None = None  # of the certificate the node presented (None without TLS)


class TelemetryService(pb_grpc.TelemetryServicer):
    def __init__(
        self,
        fleet: Fleet,
        db: sqlite3.Connection,
        require_peer_identity: bool,
        commit_interval_s: float = 0.1,
        clock_us: Callable[[], int] = wall_clock_us,
        revocations: revocation.RevocationList | None = None,
    ) -> None:
        self.fleet = fleet
        self.revocations = revocations
        self.sessions: dict[str, Session] = {}
        self._db = db
        self._require_identity = require_peer_identity
        self._commit_interval_s = commit_interval_s
        self._clock_us = clock_us
        # SQLite is used from this one thread only; ingest never waits on disk.
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="neocloud-store")
        # One commit at a time: a commit's snapshot is taken only after the previous
        # one is written (or handed back), so commit() is a barrier for its caller.
        self._commit_lock = asyncio.Lock()
        self.commits_total = 0
        self.commit_failures_total = 0
        # Nodes whose data the store refused on its own (each ended that node's stream).
        self.store_refusals_total = 0
        self.commit_seconds = Durations()
        self._refusal_log = RateLimitedLog()
        self.hello_timeout_s = HELLO_TIMEOUT_S
        self._rejection_log = RateLimitedLog()

    async def Connect(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> None:
        session: Session | None = None
        refusal: StreamRefused | None = None
        try:
            session = await self._open(context)
            await context.write(pb.SchedulerMessage(ack=self._ack(session, session.node.durable_seq)))
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
            refusal = e
        except asyncio.CancelledError:
            # Cancelled by `_end` (replaced, or refused by the store): end with its status.
            if session is None or session.ending is None:
                raise
            refusal = session.ending
        finally:
            if session is not None and self.sessions.get(session.node.node_id) is session:
                del self.sessions[session.node.node_id]
                session.node.connected = False
                logger.info("node %s disconnected", session.node.node_id)
        if refusal is None:
            return
        counts = self.fleet.counters.streams_refused
        counts[refusal.code.name] = counts.get(refusal.code.name, 0) + 1
        self._refusal_log.warning(
            "telemetry stream from %s refused: %s %s", context.peer(), refusal.code.name, refusal.details
        )
        try:
            await context.abort(refusal.code, refusal.details)
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # noqa: BLE001 (the client went away first: nobody to tell)
            logger.debug("telemetry stream from %s was gone before its status: %s", context.peer(), e)

    def _end(self, session: Session, code: grpc.StatusCode, details: str) -> None:
        """End another stream (from outside its task) with a status."""
        if session.ending is None:
            session.ending = StreamRefused(code, details)
        if session.task is not None:
            session.task.cancel()

    async def _open(self, context: grpc.aio.ServicerContext) -> Session:
        serial = revocation.peer_serial(context)
        if self.revocations is not None:
            self.revocations.refresh()  # one stat(); the list is reread only when the file changed
            refused = self.revocations.refusal(serial, tls.peer_node_id(context) or "?")
            if refused:
                raise StreamRefused(grpc.StatusCode.UNAUTHENTICATED, refused)
        try:
            first = await asyncio.wait_for(context.read(), self.hello_timeout_s)
        except TimeoutError:
            raise StreamRefused(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no Hello within {self.hello_timeout_s:g} s of opening the stream"
            ) from None
        if first is grpc.aio.EOF:
            raise StreamRefused(grpc.StatusCode.FAILED_PRECONDITION, "stream closed before its Hello")
        _refuse_undecodable(first)
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
            # A GPU belongs to the node that first registered it, connected or not
            # (threat (e)): refused before anything is registered or applied.
            owner = self.fleet.gpu_owner.get(gpu.uuid)
            if owner not in (None, hello.node_id):
                self.fleet.counters.gpu_claims_refused += 1  # logged with the refusal, rate-limited
                raise StreamRefused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"node {hello.node_id!r} claims GPU {gpu.uuid}, which belongs to node {owner!r}"
                    f"{' (connected)' if owner in self.sessions else ''} and stays with it until an operator "
                    "moves it",
                )
        node = self.fleet.register(hello, self._clock_us())
        previous = self.sessions.get(node.node_id)
        if previous is not None:
            logger.warning("node %s opened a new stream; closing its previous one", node.node_id)
            self._end(
                previous,
                grpc.StatusCode.ABORTED,
                f"replaced by a newer stream of node {node.node_id} from {context.peer()} (epoch {hello.stream_epoch})",
            )
        session = Session(node, hello.stream_epoch, asyncio.current_task(), cert_serial=serial)
        self.sessions[node.node_id] = session
        node.connected = True
        session.acked_sent = node.durable_seq
        logger.info(
            "node %s connected: %d GPUs, %s backend, epoch %d resumes after seq %d",
            node.node_id,
            len(hello.gpus),
            hello.backend,
            hello.stream_epoch,
            node.durable_seq,
        )
        return session

    def _on_message(self, session: Session, received: pb.AgentMessage | Undecodable) -> None:
        message = _refuse_undecodable(received)
        if not message.HasField("batch"):
            raise StreamRefused(grpc.StatusCode.FAILED_PRECONDITION, "after the Hello a stream carries only batches")
        batch = message.batch
        node = session.node
        if batch.node_id != node.node_id:
            raise StreamRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"batch for node {batch.node_id[:128]!r} on {node.node_id!r}'s stream: a node reports only for itself",
            )
        if reason := validate_position(batch):
            raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, reason)
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
        self._rejection_log.warning("rejected batch %d from %s: %s", batch.seq, node.node_id, reason)
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
        """Make what was applied durable, then acknowledge it. One commit at a time: when
        this returns, all that was applied before the call is in the store, a commit
        already under way included (a caller that commits to read the store after it
        must not find that write still in flight)."""
        async with self._commit_lock:
            await self._commit()

    async def _commit(self) -> None:
        loop = asyncio.get_running_loop()
        snap = self.fleet.snapshot_dirty()
        if not snap.empty():
            started = loop.time()
            try:
                await loop.run_in_executor(self._db_thread, store.write, self._db, snap)
            except isolation.DATA_ERRORS as e:
                # Something in the data: find whose, commit everyone else's.
                self.commit_failures_total += 1
                logger.warning("telemetry commit failed (%s: %s); isolating the node it came from", type(e).__name__, e)
                parts = isolation.split_by_node(snap, dict(self.fleet.gpu_owner))
                outcome = await loop.run_in_executor(self._db_thread, isolation.write_isolating, self._db, parts)
                self._settle(snap, parts, outcome)
            except Exception:
                self.commit_failures_total += 1
                logger.exception("telemetry commit failed; nothing acknowledged, retrying")
                self.fleet.restore(snap)
                return
            else:
                self.commits_total += 1
                self._mark_durable(snap.seqs)
            self.commit_seconds.observe(loop.time() - started)
        for session in self.sessions.values():
            durable = session.node.durable_seq
            if durable > session.acked_sent:
                session.acked_sent = durable
                session.acks.put_nowait(pb.SchedulerMessage(ack=self._ack(session, durable)))

    def _mark_durable(self, seqs: dict[str, tuple[int, int]]) -> None:
        for node_id, (epoch, seq) in seqs.items():
            node = self.fleet.nodes.get(node_id)
            if node is not None and node.stream_epoch == epoch:
                node.durable_seq = max(node.durable_seq, seq)

    def _settle(self, snap: store.Snapshot, parts: dict[str, store.Snapshot], outcome: isolation.Isolated) -> None:
        """After an isolating write: ack what was written, retry what the store failed
        to write, and refuse the nodes whose data it refused."""
        if outcome.written:
            self.commits_total += 1
        for node_id in outcome.written:
            self._mark_durable(parts[node_id].seqs)
        for node_id in outcome.unwritten:
            self.fleet.restore(parts[node_id])
        for node_id, error in outcome.refused.items():
            self.store_refusals_total += 1
            logger.error("the store refused the data of node %r (%s); ending its stream", node_id, error)
            if node_id == isolation.NO_NODE:
                continue
            committed, marks = outcome.committed[node_id]
            session = self.sessions.get(node_id)
            if session is not None:
                self._end(
                    session,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the store refused the data of node {node_id} ({error}); nothing after seq "
                    f"{committed.last_seq if committed else 0} was kept",
                )
            self.fleet.reset_node(node_id, committed, marks)

    async def run_commits(self) -> None:
        while True:
            await asyncio.sleep(self._commit_interval_s)
            try:
                await self.commit()
            except Exception:
                # Never let one bad commit end the loop that acks every node.
                logger.exception("telemetry commit loop: unexpected error; carrying on")

    def end_revoked(self) -> int:
        """End the open stream of every node whose certificate is now revoked; how many."""
        if self.revocations is None:
            return 0
        ended = 0
        for session in list(self.sessions.values()):
            refused = self.revocations.refusal(session.cert_serial, session.node.node_id)
            if refused:
                logger.warning("ending the stream of node %s: %s", session.node.node_id, refused)
                self._end(session, grpc.StatusCode.UNAUTHENTICATED, refused)
                ended += 1
        return ended

    def close(self) -> None:
        self._db_thread.shutdown(wait=True)


def _refuse_undecodable(message: Any) -> pb.AgentMessage:
    if isinstance(message, Undecodable):
        raise StreamRefused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a message of {message.size} bytes does not decode as {pb.AgentMessage.DESCRIPTOR.full_name}: "
            f"{message.error}",
        )
    return message
