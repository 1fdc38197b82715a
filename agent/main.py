"""The node agent: wires a GPU backend, the sampler, the spool, the telemetry stream and the
Prometheus exporter into one daemon (`neocloud agent`, whose options are in neocloud/cli/agent.py)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, start_http_server

from neocloud.agent import convert
from neocloud.agent.exporter import AgentCollector
from neocloud.agent.gpu.replay import ReplayBackend
from neocloud.agent.gpu.sim import RayJobProcesses, SimBackend
from neocloud.agent.gpu.types import BackendError, GpuBackend
from neocloud.agent.sampler import Sampler
from neocloud.agent.spool import DEFAULT_MAX_BYTES, Spool
from neocloud.agent.stream import StreamClient
from neocloud.wire import tls
from neocloud.wire.netaddr import is_loopback, split_host_port

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    node_id: str
    scheduler: str = "localhost:7443"
    backend: str = "auto"
    sim_gpus: int = 8
    sim_load: float | None = None
    sim_follow_jobs: bool = False
    replay_traces: tuple[str, ...] = ()
    replay_speed: float = 1.0
    tick_s: float = 1.0
    energy_interval_s: float = 10.0
    batch_ticks: int = 10
    spool_path: str = "/var/lib/neocloud/agent-spool.db"
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = 9402  # not dcgm-exporter's 9400
    insecure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    backoff_max_s: float = 30.0


def make_backend(config: AgentConfig) -> GpuBackend:
    if config.backend == "sim":
        jobs = RayJobProcesses(config.node_id) if config.sim_follow_jobs else None
        return SimBackend(config.node_id, config.sim_gpus, config.sim_load, jobs=jobs)
    if config.backend == "replay":
        return ReplayBackend.from_files(config.replay_traces, config.replay_speed)
    if config.backend not in ("auto", "nvml"):
        raise BackendError(f"unknown backend {config.backend!r}: choose auto, nvml, sim or replay")
    from neocloud.agent.gpu.nvml import NvmlBackend  # pynvml is only needed here

    return NvmlBackend()


def channel_credentials(config: AgentConfig) -> grpc.ChannelCredentials | None:
    host, _ = split_host_port(config.scheduler)
    if config.insecure:
        if not is_loopback(host):
            raise ValueError(f"--insecure is only allowed to a loopback scheduler, not {host!r}; use mTLS")
        return None
    if not (config.ca_file and config.cert_file and config.key_file):
        raise ValueError(
            "mTLS needs --ca, --cert and --key (make them with `neocloud certs`), or --insecure on loopback"
        )
    return tls.channel_credentials(config.ca_file, config.cert_file, config.key_file)


class Agent:
    """One node's agent; `start()` runs it in background threads."""

    def __init__(self, config: AgentConfig, backend: GpuBackend | None = None) -> None:
        self.config = config
        tls.validate_node_id(config.node_id)
        credentials = channel_credentials(config)
        self.backend = backend if backend is not None else make_backend(config)
        self.spool = Spool(config.spool_path, config.spool_max_bytes)
        self.sampler = Sampler(
            config.node_id, self.backend, self.spool, config.tick_s, config.energy_interval_s, config.batch_ticks
        )
        hello = convert.hello(config.node_id, self.spool.epoch, self.sampler.inventory, self.backend.name)
        self.stream = StreamClient(
            config.scheduler,
            self.spool,
            hello,
            credentials,
            server_name=config.server_name,
            backoff_max_s=config.backoff_max_s,
        )
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(self.sampler, self.stream))
        self.metrics_port: int | None = None
        self._threads: list[threading.Thread] = []
        self._http_server: object | None = None
        self._stopped = False

    def start(self) -> None:
        if self.config.metrics_port is not None:
            server, _ = start_http_server(self.config.metrics_port, self.config.metrics_host, registry=self.registry)
            self._http_server = server
            self.metrics_port = server.server_port
            logger.info("agent metrics on http://%s:%d/metrics", self.config.metrics_host, self.metrics_port)
        for name, target in (("sampler", self.sampler.run), ("stream", self.stream.run)):
            thread = threading.Thread(target=target, name=f"neocloud-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info(
            "agent %s: %d GPUs (%s backend) streaming to %s",
            self.config.node_id,
            len(self.sampler.inventory),
            self.backend.name,
            self.config.scheduler,
        )

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop; with `drain_s`, first give the scheduler that long to ack what
        is spooled (whatever it does not ack is resent on the next start)."""
        if self._stopped:
            return
        self._stopped = True
        self.sampler.stop()
        if self._threads:
            self._threads[0].join(timeout=10)  # the sampler seals its last batch
        deadline = time.monotonic() + drain_s
        while self.spool.stats().batches and self.stream.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stream.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._http_server is not None:
            self._http_server.shutdown()  # type: ignore[attr-defined]
            self._http_server.server_close()  # type: ignore[attr-defined]
        self.backend.close()
        self.spool.close()
