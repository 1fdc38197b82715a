"""Every RPC of every service the scheduler serves, fuzzed over a real socket
with mTLS (the fuzzer presents a node certificate of its own), reflection on
the port for people.

Each RPC gets a batch of generated messages with hostile values, the same
mutated or truncated on the wire, and random bytes, as an operator, as a
tenant and with a missing or made-up token. Every reply must carry a status
documented for that RPC (never UNKNOWN or INTERNAL); after each batch the
server is SERVING, nothing was logged with a traceback, the store passes
`PRAGMA integrity_check`, a well-behaved node's telemetry is still acked and
no reply to one tenant held another tenant's job.

NEOCLOUD_FUZZ_EXAMPLES sets the examples per RPC (CI: 20); the counts per
service and the status histogram are printed at the end (run with -s) and, if
NEOCLOUD_FUZZ_REPORT names a file, written there as JSON.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neocloud.agent.convert import build_batch, hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import Role
from neocloud.v1 import jobs_pb2
from neocloud.v1 import jobs_pb2_grpc as jobs_grpc
from neocloud.v1 import telemetry_pb2 as tpb
from neocloud.v1 import telemetry_pb2_grpc as tpb_grpc
from neocloud.wire import tls
from tests.integration.fuzz_messages import PROTO_FILES, payloads, texts

EXAMPLES = int(os.environ.get("NEOCLOUD_FUZZ_EXAMPLES", "20"))
SECRET = "globex-secret-marker"  # in globex's job only: never in a reply to acme
C = grpc.StatusCode
REFLECTION = reflection.SERVICE_NAME
API = {C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS, C.PERMISSION_DENIED, C.UNAUTHENTICATED,
       C.FAILED_PRECONDITION, C.RESOURCE_EXHAUSTED, C.UNIMPLEMENTED}  # fmt: skip
# The documented statuses per service; a response stream may also run into the client's deadline.
DOCUMENTED = {
    "neocloud.v1.JobService": API,
    "neocloud.v1.AdminService": API,
    "neocloud.v1.UsageService": API,
    "neocloud.v1.NodeService": API,
    "neocloud.v1.ArtifactService": API,
    # Health.List is not implemented by grpc's servicer. Every RPC may meet a server-wide
    # limit (message size, calls at once, calls per peer): RESOURCE_EXHAUSTED.
    "grpc.health.v1.Health": {C.OK, C.NOT_FOUND, C.INVALID_ARGUMENT, C.UNIMPLEMENTED, C.RESOURCE_EXHAUSTED},
    REFLECTION: {C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED},
    "neocloud.v1.Telemetry": {C.OK, C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.PERMISSION_DENIED, C.ABORTED,
                              C.RESOURCE_EXHAUSTED},
}  # fmt: skip
METHODS: list[MethodDescriptor] = [
    m for f in (*PROTO_FILES, reflection_pb2) for s in f.DESCRIPTOR.services_by_name.values() for m in s.methods
]
tried: dict[str, Counter[str]] = defaultdict(Counter)  # service -> payload kind -> count
outcomes: dict[str, Counter[str]] = defaultdict(Counter)  # service -> status -> count
# What an operator's call wrote in free text every tenant may read (a cordon's reason): a job id there
# was published by the operator, not leaked by the service.
published: set[bytes] = set()


class Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback" in record.getMessage():
            self.records.append(record)


class GoodNode:
    """A well-behaved node: a batch in, an ack out, between the fuzzer's batches."""

    def __init__(self, channel: grpc.Channel) -> None:
        ticks = iter(range(1, 10**9))
        self._backend = SimBackend(
            "good-node", 1, load=0.5, clock_us=lambda: 1_800_000_000_000_000 + next(ticks) * 10**6
        )
        self._channel = channel
        self._outbox: queue.Queue[tpb.AgentMessage] = queue.Queue()
        self._outbox.put(hello("good-node", 7, self._backend.inventory(), "sim"))
        self._call = tpb_grpc.TelemetryStub(self._channel).Connect(iter(self._outbox.get, None))
        self.seq = 0
        assert next(self._call).ack.acked_seq == 0

    def send_and_ack(self) -> None:
        self.seq += 1
        b = build_batch("good-node", self._backend.inventory(), [self._backend.read(True)], 1_900_000_000_000_000)
        b.stream_epoch, b.seq = 7, self.seq
        self._outbox.put(tpb.AgentMessage(batch=b))
        assert next(self._call).ack.acked_seq == self.seq

    def close(self) -> None:
        self._channel.close()


class Site:
    def __init__(self, root: Path) -> None:
        self.db_path = str(root / "scheduler.db")
        store = JobStore(open_db(self.db_path))  # made before the scheduler starts on it
        for tenant in ("acme", "globex"):
            store.create_tenant(tenant)
        self.tokens = {
            "operator": store.create_token(Role.OPERATOR, "fuzz-ops"),
            "acme": store.create_token(Role.TENANT, "fuzz-acme", tenant="acme"),
            "globex": store.create_token(Role.TENANT, "fuzz-globex", tenant="globex"),
        }
        store.close()
        tls.write_ca(root)
        tls.write_server(root, ["localhost"])
        for node in ("good-node", "fuzz-node"):
            tls.write_node(root, node)
        self.sched = BackgroundScheduler(
            SchedulerConfig(listen="127.0.0.1:0", db_path=self.db_path, metrics_port=None, ca_file=str(root / "ca.pem"),
                            cert_file=str(root / "scheduler.pem"), key_file=str(root / "scheduler-key.pem"),
                            api_listen="127.0.0.1:0", api_cert_file=str(root / "scheduler.pem"),
                            api_key_file=str(root / "scheduler-key.pem"))
        )  # fmt: skip
        self.channel = self.connect(root, "fuzz-node")  # the fuzzer holds a node certificate, as a node would
        # The port for people (server TLS only) is the one that serves reflection.
        self.api_channel = grpc.secure_channel(
            f"localhost:{self.sched.scheduler.api_port}",
            grpc.ssl_channel_credentials((root / "ca.pem").read_bytes()),
        )
        self.jobs = {who: self._submit(who) for who in ("acme", "globex")}
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.node = GoodNode(self.connect(root, "good-node"))

    def connect(self, root: Path, node: str) -> grpc.Channel:
        credentials = tls.channel_credentials(root / "ca.pem", root / f"node-{node}.pem", root / f"node-{node}-key.pem")
        return grpc.secure_channel(f"localhost:{self.sched.port}", credentials)

    def _submit(self, who: str) -> str:
        spec = jobs_pb2.JobSpec(
            job_class=jobs_pb2.JOB_CLASS_SPOT, gpus=1, command=["echo", SECRET if who == "globex" else "hello"]
        )
        job = jobs_grpc.JobServiceStub(self.channel).Submit(
            jobs_pb2.SubmitJobRequest(spec=spec), metadata=self.metadata(who)
        )
        return str(job.job_id)

    def metadata(self, who: str) -> list[tuple[str, str]]:
        if who == "none":
            return []
        return [("authorization", f"Bearer {self.tokens.get(who, 'nct_made-up-by-the-fuzzer')}")]

    def known_ids(self) -> list[str]:
        return [*self.jobs.values(), "good-node", "acme", "globex"] if hasattr(self, "jobs") else []

    def close(self) -> None:
        self.node.close()
        self.channel.close()
        self.api_channel.close()
        self.sched.stop()


site_ref: list[Site] = []  # read by the strategies, which are built before the fixture runs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("fuzz"))
    site_ref.append(s)
    yield s
    site_ref.clear()
    s.close()
    report = {"examples_per_rpc": EXAMPLES, "tried": tried, "outcomes": outcomes}
    print("\nfuzz:", json.dumps(report, sort_keys=True))
    if path := os.environ.get("NEOCLOUD_FUZZ_REPORT"):
        Path(path).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


TEXT = texts(lambda: site_ref[0].known_ids() if site_ref else [])
WHO = st.sampled_from(("operator", "acme", "none", "made-up"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=False
)


def _call(site: Site, method: MethodDescriptor, frames: list[bytes], who: str) -> tuple[C, list[bytes]]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    kinds = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    metadata = site.metadata(who)
    channel = site.api_channel if method.containing_service.full_name == REFLECTION else site.channel
    try:
        if method.client_streaming:
            return C.OK, list(channel.stream_stream(path, **kinds)(iter(frames), metadata=metadata, timeout=5))
        if method.server_streaming:
            replies: list[bytes] = []
            for reply in channel.unary_stream(path, **kinds)(frames[0], metadata=metadata, timeout=0.3):
                replies.append(reply)
            return C.OK, replies
        return C.OK, [channel.unary_unary(path, **kinds)(frames[0], metadata=metadata, timeout=5)]
    except grpc.RpcError as e:
        if e.code() is C.DEADLINE_EXCEEDED and method.server_streaming:
            return C.DEADLINE_EXCEEDED, []  # the stream was still open: the client stopped waiting
        assert e.code() in DOCUMENTED[method.containing_service.full_name], (path, who, e.code(), e.details())
        return e.code(), []


_epochs = itertools.count(1)
_FUZZ_NODE = SimBackend("fuzz-node", 2, load=0.5)


def _fuzz_node_hello() -> bytes:
    return hello("fuzz-node", next(_epochs), _FUZZ_NODE.inventory(), "sim").SerializeToString()


def _after_batch(site: Site, tracebacks: Tracebacks) -> None:
    reply = site.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records[:3]]
    with sqlite3.connect(site.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    site.node.send_and_ack()


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
def test_fuzz_rpc(site: Site, tracebacks: Tracebacks, method: MethodDescriptor) -> None:
    service = method.containing_service.full_name
    frames = st.lists(payloads(method.input_type, TEXT), min_size=1, max_size=4 if method.client_streaming else 1)
    if method.client_streaming:  # half the streams get past the Hello, so batches reach validation and the store
        frames = st.one_of(frames, frames.map(lambda f: [("generated", _fuzz_node_hello()), *f]))

    @FUZZ
    @given(frames=frames, who=WHO)
    def fuzz(frames: list[tuple[str, bytes]], who: str) -> None:
        for kind, _ in frames:
            tried[service][kind] += 1
        code, replies = _call(site, method, [data for _, data in frames], who)
        outcomes[service][code.name] += 1
        marks = [SECRET.encode(), site.jobs["globex"].encode()]
        if who == "operator" and code.name == "OK":
            published.update(m for m in marks if any(m in data for _, data in frames))
        if who == "acme":
            # globex's job id in a reply is a leak unless the request carried it (reflection echoes it)
            # or an operator wrote it where tenants read.
            marks = [m for m in marks if m not in published and not any(m in data for _, data in frames)]
            leaked = [r for r in replies if any(m in r for m in marks)]
            assert not leaked, (method.name, leaked[:1])

    fuzz()
    _after_batch(site, tracebacks)


def test_every_rpc_was_fuzzed(site: Site) -> None:
    assert {m.containing_service.full_name for m in METHODS} == set(DOCUMENTED)
    assert set(tried) == set(DOCUMENTED)
