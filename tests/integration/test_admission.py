"""Submit refuses, at the door, a job that can never fit the fleet (issue 12 item 4), over real
gRPC with the real services, interceptor and store; a job that could fit later is queued."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from neocloud.agent.convert import hello
from neocloud.agent.gpu.sim import SimBackend
from neocloud.scheduler.api.admission import Inventory
from neocloud.scheduler.api.services import add_api_services
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.service import TelemetryService
from neocloud.v1 import jobs_pb2 as pb
from tests.api_server import ApiServer

H200 = "NVIDIA H200"


class FleetApiServer(ApiServer):
    """ApiServer wired as the scheduler wires it: the services see the live fleet."""

    def __init__(self, db_path: Path) -> None:
        self.fleet = Fleet()
        super().__init__(db_path)

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            interceptors=[__import__("neocloud.scheduler.api.errors").scheduler.api.errors.ErrorInterceptor()]
        )
        add_api_services(
            server, self.store, self.logs, poll_interval_s=0.02, telemetry=TelemetryService(self.fleet, None, False)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    def add_node(self, node_id: str, gpus: int = 8, model: str = H200) -> None:
        inventory = [replace(g, model=model) for g in SimBackend(node_id, gpus).inventory()]
        self.fleet.register(hello(node_id, 1, inventory, "sim").hello, 1)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FleetApiServer]:
    server = FleetApiServer(tmp_path / "scheduler.db")
    yield server
    server.stop()


def submit(api: FleetApiServer, **fields: Any) -> pb.Job:
    values: dict[str, Any] = {"job_class": pb.JOB_CLASS_SPOT, "gpus": 8, "command": ["python", "train.py"]}
    values.update(fields)
    request = pb.SubmitJobRequest(spec=pb.JobSpec(**values))
    return api.jobs.Submit(request, metadata=api.auth("acme"), timeout=10)  # type: ignore[no-any-return]


def refusal(api: FleetApiServer, **fields: Any) -> str:
    with pytest.raises(grpc.RpcError) as e:
        submit(api, **fields)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    return str(e.value.details())


def test_a_job_that_can_never_fit_is_refused_naming_the_limit(api: FleetApiServer) -> None:
    for k in range(4):
        api.add_node(f"n{k}")  # 32 H200s
    assert refusal(api, gpus=4096, gpu_model=H200).startswith("asks for 4096 NVIDIA H200 GPUs; the fleet has 32")
    assert refusal(api, gpus=4096) == "asks for 4096 NVIDIA H200 GPUs; the fleet has 32: this job can never run here"
    assert refusal(api, gpus=8, gpu_model="NVIDIA B300") == (
        "asks for NVIDIA B300 GPUs; the fleet has none (it has NVIDIA H200): this job can never run here"
    )
    assert refusal(api, gpus=16, gpus_per_node=16) == (
        "asks for 1 node with 16 NVIDIA H200 GPUs each; the fleet has 0 nodes with 16 or more (largest: 8 GPUs)"
        ": this job can never run here"
    )
    # The whole fleet, busy or not today, fits: queued, waiting with the policy's reason.
    assert submit(api, gpus=32, gpus_per_node=8).state == pb.JOB_STATE_QUEUED
    # A malformed shape is still the store's INVALID_ARGUMENT, not an admission refusal.
    with pytest.raises(grpc.RpcError) as e:
        submit(api, gpus=12, gpus_per_node=8)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_an_empty_fleet_refuses_nothing_and_a_new_model_is_seen_at_once(api: FleetApiServer) -> None:
    # No node registered yet: the job waits (the fleet being empty says nothing of what it will hold).
    assert submit(api, gpus=64, gpu_model="NVIDIA B300").state == pb.JOB_STATE_QUEUED
    api.add_node("n0")
    refusal(api, gpus=8, gpu_model="NVIDIA B300")
    api.add_node("b0", model="NVIDIA B300")  # a node joins: no cache keeps the old answer
    assert submit(api, gpus=8, gpu_model="NVIDIA B300").state == pb.JOB_STATE_QUEUED


def test_gang_shapes_count_the_nodes_that_can_hold_a_slice() -> None:
    inv = Inventory.from_sizes({H200: [8, 8, 4], "NVIDIA H100": [8]})
    assert inv.never_fits(16, 8, H200) is None
    assert inv.never_fits(12, 4, H200) is None
    small = Inventory.from_sizes({H200: [8, 4, 4, 4]})  # 20 GPUs, but one node can hold a slice of 8
    assert small.never_fits(16, 8, H200) == (
        "asks for 2 nodes with 8 NVIDIA H200 GPUs each; the fleet has 1 node with 8 or more (largest: 8 GPUs)"
    )
    assert inv.never_fits(40, 8, None) == (
        "asks for 40 NVIDIA H200 GPUs; the fleet has 20 (the model with the most GPUs; a job runs on one model)"
    )
    assert inv.never_fits(8, 8, None) is None
    assert Inventory.from_sizes({}).never_fits(10**6, 8, "anything") is None
