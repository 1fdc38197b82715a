"""The stream over mTLS: identity enforced; and both /metrics as Prometheus reads them."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.wire import tls
from tests.helpers import wait_until


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    tls.write_ca(tmp_path)
    tls.write_server(tmp_path, ["localhost", "127.0.0.1"])
    for node in ("node-1", "node-2"):
        tls.write_node(tmp_path, node)
    return tmp_path


def mtls_scheduler(factory: Callable[..., BackgroundScheduler], pki: Path, **extra: object) -> BackgroundScheduler:
    return factory(
        insecure=False,
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / "scheduler.pem"),
        key_file=str(pki / "scheduler-key.pem"),
        **extra,
    )


def mtls_agent(
    factory: Callable[..., Agent], port: int, pki: Path, node_id: str, cert_of: str, **extra: object
) -> Agent:
    return factory(
        port,
        backend=SimBackend(node_id, 2, load=0.2),
        node_id=node_id,
        scheduler=f"localhost:{port}",
        insecure=False,
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / f"node-{cert_of}.pem"),
        key_file=str(pki / f"node-{cert_of}-key.pem"),
        spool_path=str(pki / f"spool-{node_id}.db"),
        **extra,
    )


def scrape(port: int | None) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_node_streams_over_mtls_and_may_not_pose_as_another(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent], pki: Path
) -> None:
    sched = mtls_scheduler(scheduler_factory, pki)
    honest = mtls_agent(agent_factory, sched.port, pki, "node-1", cert_of="node-1")
    # node-2's certificate, claiming to be node-3: refused.
    impostor = mtls_agent(agent_factory, sched.port, pki, "node-3", cert_of="node-2")
    fleet = sched.scheduler.telemetry.fleet
    wait_until(lambda: honest.spool.last_seq > 3 and honest.spool.stats().batches <= 1, what="mTLS streaming")
    wait_until(lambda: fleet.counters.streams_refused.get("PERMISSION_DENIED", 0) >= 1, what="the impostor refused")
    assert "node-3" not in fleet.nodes and "node-1" in fleet.nodes
    assert impostor.stream.stats.acks_total == 0


def test_insecure_is_loopback_only(
    agent_factory: Callable[..., Agent], scheduler_factory: Callable[..., BackgroundScheduler]
) -> None:
    with pytest.raises(ValueError, match="loopback"):
        agent_factory(7443, scheduler="10.1.2.3:7443", run=False)
    with pytest.raises(ValueError, match="loopback"):
        scheduler_factory(listen="0.0.0.0:0")


def test_metrics_follow_prometheus_conventions(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory(metrics_port=0, metrics_host="127.0.0.1")
    agent = agent_factory(
        sched.port, backend=SimBackend("node-1", 2, load=1.0), metrics_port=0, metrics_host="127.0.0.1"
    )
    wait_until(lambda: len(agent.sampler.latest.energy) == 2 and agent.spool.last_seq > 5)
    agent_metrics = scrape(agent.metrics_port)
    power = agent_metrics["neocloud_gpu_power_watts"]
    assert len(power) == 2
    labels, watts = power[0]
    assert set(labels) == {"node", "gpu", "uuid", "model"} and labels["model"] == "NVIDIA H200"
    assert 600 < watts < 700
    assert all(v == 1.0 for _, v in agent_metrics["neocloud_gpu_utilization_ratio"])
    assert all(v > 0 for _, v in agent_metrics["neocloud_gpu_energy_joules_total"])
    assert agent_metrics["neocloud_agent_connected"][0][1] == 1.0
    for name in (
        "neocloud_gpu_memory_used_bytes",
        "neocloud_gpu_temperature_celsius",
        "neocloud_agent_dropped_samples_total",
    ):
        assert name in agent_metrics

    node = sched.scheduler.telemetry.fleet.nodes["node-1"]
    wait_until(lambda: all(g.energy.total_mj > 0 for g in node.gpus.values()), what="energy at the scheduler")
    sched_metrics = scrape(sched.scheduler.metrics_port)
    assert sched_metrics["neocloud_node_connected"] == [({"node": "node-1"}, 1.0)]
    assert all(v > 0 for _, v in sched_metrics["neocloud_fleet_gpu_energy_joules_total"])
    outcomes = {labels["result"]: v for labels, v in sched_metrics["neocloud_ingest_batches_total"]}
    assert outcomes["accepted"] >= 5 and outcomes["rejected"] == 0
