"""`neocloud admin node move-gpu` over real gRPC: a GPU that moved between hosts is
refused on its new node until an operator moves it; then the new node's Hello is acked,
the old node's claim is refused, the move is in the audit trail, and it survives a
restart. Tenants cannot move GPUs; a connected node's GPU does not move."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from contextlib import closing, redirect_stderr, redirect_stdout
from pathlib import Path

import grpc
import pytest

from neocloud.agent.convert import hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.cli.main import main
from neocloud.client import Client
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store import open_db
from neocloud.scheduler.store.records import Role
from neocloud.v1 import admin_pb2 as pb
from tests.helpers import wait_until
from tests.integration.test_hostile_streams import EPOCH, RawStream, batch


def sim(node: str, gpus: int = 2) -> SimBackend:
    ticks = iter(range(1, 10**9))
    return SimBackend(node, gpus, load=0.5, clock_us=lambda: 1_800_000_000_000_000 + next(ticks) * 1_000_000)


def stream_for(sched: BackgroundScheduler, node: str, backend: SimBackend, batches: int) -> None:
    """Connect as `node` with `backend`'s GPUs, have `batches` batches acked, disconnect."""
    stream = RawStream(sched.port)
    stream.send(hello(node, EPOCH, backend.inventory(), "sim"))
    acked = stream.recv().ack.acked_seq
    for seq in range(acked + 1, acked + batches + 1):
        stream.send(batch(backend, seq, node=node))
    deadline = time.monotonic() + 10
    while acked < batches and time.monotonic() < deadline:
        acked = stream.recv().ack.acked_seq
    stream.close()
    assert acked >= batches
    wait_until(lambda: node not in sched.scheduler.telemetry.sessions, 10, f"{node} disconnected")


def refusal(sched: BackgroundScheduler, node: str, backend: SimBackend) -> tuple[grpc.StatusCode, str]:
    stream = RawStream(sched.port)
    stream.send(hello(node, EPOCH, backend.inventory(), "sim"))
    try:
        code, details = stream.status()
    finally:
        stream.close()
    return code, details


def ledger_mj(sched: BackgroundScheduler, uuid: str) -> float:
    """The energy attributed to `uuid` (allocations and idle), as committed; checks on the way that
    the GPU's attribution watermark matches its energy total, which a restart relies on."""
    with closing(open_db(sched.scheduler.config.db_path, create=False)) as db:
        total, attributed = db.execute(
            "SELECT g.energy_total_mj, w.attributed_total_mj FROM gpus g JOIN meter_watermarks w USING (uuid)"
            " WHERE uuid = ?",
            (uuid,),
        ).fetchone()
        assert attributed == pytest.approx(total)
        return float(db.execute("SELECT SUM(energy_mj) FROM meter_cells WHERE uuid = ?", (uuid,)).fetchone()[0])


def cli(*words: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
        main(list(words))
    return int(done.value.code or 0), out.getvalue(), err.getvalue()


def test_an_operator_moves_a_gpu_and_the_new_node_is_acked(
    scheduler_factory: Callable[..., BackgroundScheduler], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = scheduler_factory()
    fleet = sched.scheduler.telemetry.fleet
    store = sched.scheduler.jobs
    store.create_tenant("acme")
    operator, tenant = store.create_token(Role.OPERATOR, "ops-alice"), store.create_token(Role.TENANT, "t", "acme")
    node_x, node_y = sim("node-x"), sim("node-y", 1)
    stream_for(sched, "node-x", node_x, 2)
    stream_for(sched, "node-y", node_y, 1)
    moved_uuid = node_x.inventory()[0].uuid
    earned_on_x = fleet.nodes["node-x"].gpus[moved_uuid].energy.total_mj
    assert earned_on_x > 0
    # The GPU is now in node-y's chassis: node-y names it and is refused.
    in_y = sim("node-x", 1)  # the same GPU (sim UUIDs come from the node and the index)
    assert refusal(sched, "node-y", in_y)[0] == grpc.StatusCode.PERMISSION_DENIED

    request = pb.MoveGpuRequest(gpu_uuid=moved_uuid, to_node="node-y", reason="moved to y's chassis")
    as_tenant = Client(server=f"127.0.0.1:{sched.port}", token=tenant, insecure=True)
    with as_tenant, pytest.raises(grpc.RpcError) as denied:
        as_tenant.admin.MoveGpu(request, metadata=as_tenant.metadata, timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with Client(server=f"127.0.0.1:{sched.port}", token=operator, insecure=True) as op:
        # While the owner is connected its GPU does not move.
        x_online = RawStream(sched.port)
        x_online.send(hello("node-x", EPOCH, node_x.inventory(), "sim"))
        x_online.recv()
        with pytest.raises(grpc.RpcError) as busy:
            op.admin.MoveGpu(request, metadata=op.metadata, timeout=10)
        assert busy.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "node node-x is connected" in (busy.value.details() or "")
        x_online.close()
        wait_until(lambda: "node-x" not in sched.scheduler.telemetry.sessions, 10, "node-x disconnected")
        for bad, code in (
            (pb.MoveGpuRequest(gpu_uuid="GPU-unknown", to_node="node-y"), grpc.StatusCode.NOT_FOUND),
            (pb.MoveGpuRequest(gpu_uuid=moved_uuid, to_node="node-z"), grpc.StatusCode.NOT_FOUND),
            (pb.MoveGpuRequest(gpu_uuid="nvidia0", to_node="node-y"), grpc.StatusCode.INVALID_ARGUMENT),
            (pb.MoveGpuRequest(gpu_uuid=moved_uuid, to_node="-y"), grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                op.admin.MoveGpu(bad, metadata=op.metadata, timeout=10)
            assert refused.value.code() == code, refused.value.details()
        assert store.audit_events() == []

    monkeypatch.setenv("NEOCLOUD_SERVER", f"127.0.0.1:{sched.port}")
    monkeypatch.setenv("NEOCLOUD_TOKEN", operator)
    code, out, err = cli("admin", "node", "move-gpu", moved_uuid, "--to", "node-y", "--reason", "moved", "--insecure")
    assert code == 0, err
    assert out.startswith(f"GPU {moved_uuid} moved from node node-x to node node-y")
    assert fleet.gpu_owner[moved_uuid] == "node-y"
    # Moving it again to where it is, or a GPU nobody has: a line on stderr and a non-zero status.
    code, out, err = cli("admin", "node", "move-gpu", moved_uuid, "--to", "node-y", "--insecure")
    assert code != 0 and out == "" and "FAILED_PRECONDITION" in err and "already" in err
    code, out, err = cli("admin", "node", "move-gpu", "GPU-nope", "--to", "node-y", "--insecure")
    assert code != 0 and "NOT_FOUND" in err

    # The new node's Hello with the GPU is acked and its batches counted; the old node's claim is refused.
    stream_for(sched, "node-y", in_y, 3)
    gpu = fleet.nodes["node-y"].gpus[moved_uuid]
    assert gpu.node_id == "node-y" and gpu.energy.total_mj > 0  # afresh on node-y
    # The ledger holds what it earned on node-x and what it earned since, each once.
    sched.call(sched.scheduler.telemetry.commit())
    assert ledger_mj(sched, moved_uuid) == pytest.approx(earned_on_x + gpu.energy.total_mj)
    code, details = refusal(sched, "node-x", node_x)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "belongs to node 'node-y'" in details
    assert moved_uuid not in fleet.nodes["node-x"].gpus

    code, out, err = cli("admin", "audit", "--subject", moved_uuid, "--json", "--insecure")
    assert code == 0, err
    [event] = json.loads(out)
    assert (event["actor"], event["action"], event["reason"]) == ("ops-alice", "move-gpu", "moved")
    assert json.loads(event["detail_json"]) == {"from": "node-x", "to": "node-y", "energy_total_mj": earned_on_x}
    code, out, _ = cli("admin", "audit", "--insecure")
    assert code == 0 and "move-gpu" in out and moved_uuid in out

    # Ownership is in the store: after a restart the GPU is still node-y's.
    db_path = sched.scheduler.config.db_path
    sched.stop()
    again = scheduler_factory(db_path=db_path)
    assert again.scheduler.telemetry.fleet.gpu_owner[moved_uuid] == "node-y"
    assert refusal(again, "node-x", node_x)[0] == grpc.StatusCode.PERMISSION_DENIED
    stream_for(again, "node-y", in_y, 1)  # after the restart nothing is attributed twice
    again.call(again.scheduler.telemetry.commit())
    total_on_y = again.scheduler.telemetry.fleet.nodes["node-y"].gpus[moved_uuid].energy.total_mj
    assert ledger_mj(again, moved_uuid) == pytest.approx(earned_on_x + total_on_y)
