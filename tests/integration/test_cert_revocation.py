"""Revoking a node's certificate (issue 12 item 10), over real mTLS sockets: gRPC Python
checks no CRL at the handshake, so the scheduler refuses a revoked node at its first
call (UNAUTHENTICATED, naming the serial and the node), rereads the CRL beside its CA
on change without a restart, and ends a revoked node's open stream within seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from neocloud.agent.main import Agent
from neocloud.cli.main import build_parser
from neocloud.scheduler.server import REVOCATION_POLL_S, BackgroundScheduler
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.v1 import telemetry_pb2_grpc as pb_grpc
from neocloud.wire import revocation, tls
from tests.helpers import wait_until
from tests.integration.test_mtls_and_metrics import mtls_agent, mtls_scheduler


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    tls.write_ca(tmp_path)
    tls.write_server(tmp_path, ["localhost", "127.0.0.1"])
    for node in ("node-1", "node-2"):
        tls.write_node(tmp_path, node)
    return tmp_path


def serial_of(pki: Path, node: str) -> int:
    return x509.load_pem_x509_certificate((pki / f"node-{node}.pem").read_bytes()).serial_number


def connect_as(port: int, pki: Path, node: str) -> grpc.RpcError:
    """Open a telemetry stream with `node`'s certificate; the error it ends with."""
    creds = tls.channel_credentials(pki / "ca.pem", pki / f"node-{node}.pem", pki / f"node-{node}-key.pem")
    with grpc.secure_channel(f"localhost:{port}", creds) as channel:
        hello = pb.AgentMessage(hello=pb.Hello(node_id=node))

        def requests() -> Iterator[pb.AgentMessage]:
            yield hello
            time.sleep(5)  # hold the stream open until the server has answered

        try:
            for _ in pb_grpc.TelemetryStub(channel).Connect(requests(), timeout=10):
                pass
        except grpc.RpcError as e:
            return e
    raise AssertionError("the stream ended without an error")


def test_revoke_writes_a_signed_crl_and_the_list_follows_the_file(pki: Path, tmp_path: Path) -> None:
    watched = revocation.RevocationList(pki / "ca.pem")
    assert watched.serials == frozenset() and not watched.refresh()
    serial, what = revocation.revoke(pki, "node-1")
    assert (serial, what) == (serial_of(pki, "node-1"), "node node-1")
    assert watched.refresh() and watched.serials == {serial}
    assert watched.refusal(serial, "node-1") == f"certificate serial 0x{serial:x} of node node-1 is revoked"
    assert watched.refusal(serial_of(pki, "node-2"), "node-2") is None
    # By serial, in the forms openssl prints; twice is a no-op.
    other = serial_of(pki, "node-2")
    colons = ":".join(f"{other:x}"[i : i + 2] for i in range(0, len(f"{other:x}"), 2))
    assert revocation.revoke(pki, colons.upper())[0] == other
    assert revocation.revoke(pki, f"0x{other:x}")[0] == other
    assert watched.refresh() and watched.serials == {serial, other}
    with pytest.raises(ValueError, match="neither a node id"):
        revocation.revoke(pki, "node-9")
    # A CRL another CA signed is not believed: the last good list stays.
    forged = tmp_path / "forged"
    tls.write_ca(forged)
    revocation.revoke(forged, "0x1234")
    (pki / "crl.pem").write_bytes((forged / "crl.pem").read_bytes())
    assert not watched.refresh() and watched.serials == {serial, other}


def test_a_revoked_node_is_refused_and_its_open_stream_ended(
    scheduler_factory: Callable[..., BackgroundScheduler],
    agent_factory: Callable[..., Agent],
    pki: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sched = mtls_scheduler(scheduler_factory, pki)
    mtls_agent(agent_factory, sched.port, pki, "node-1", cert_of="node-1")
    two = mtls_agent(agent_factory, sched.port, pki, "node-2", cert_of="node-2")
    service = sched.scheduler.telemetry
    wait_until(lambda: {"node-1", "node-2"} <= set(service.sessions), what="both nodes streaming")

    args = build_parser().parse_args(["certs", "revoke", "--dir", str(pki), "node-1"])
    assert args.func(args) == 0
    assert f"revoked node node-1 (serial 0x{serial_of(pki, 'node-1'):x})" in capsys.readouterr().out
    revoked_at = time.monotonic()
    wait_until(lambda: "node-1" not in service.sessions, timeout_s=10, what="node-1's stream ended")
    ended_after_s = time.monotonic() - revoked_at
    assert ended_after_s < 3 * REVOCATION_POLL_S + 2, ended_after_s
    assert service.fleet.counters.streams_refused.get("UNAUTHENTICATED", 0) >= 1

    # A new stream is refused at once, naming the serial and the node; node-2 streams on.
    refused = connect_as(sched.port, pki, "node-1")
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refused.details() == f"certificate serial 0x{serial_of(pki, 'node-1'):x} of node node-1 is revoked"
    acked = two.stream.stats.acks_total
    wait_until(lambda: two.stream.stats.acks_total > acked + 2, what="node-2 still acked")
    assert "node-2" in service.sessions and "node-1" not in service.sessions
