"""Prometheus collector for the agent: the latest GPU readings and the agent's
own health, built from the sampler's and streamer's state at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from neocloud.agent.sampler import Sampler
from neocloud.agent.stream import StreamClient
from neocloud.domain.build import build_labels
from neocloud.domain.gpu import GpuSample

GPU_LABELS = ["node", "gpu", "uuid", "model"]

# (metric suffix, help, sample field, scale to base unit)
_GAUGES = (
    ("power_watts", "Power draw.", "power_mw", 1e-3),
    ("utilization_ratio", "Fraction of time a kernel ran.", "gpu_util_percent", 1e-2),
    ("memory_utilization_ratio", "Fraction of time memory was read or written.", "memory_util_percent", 1e-2),
    ("memory_used_bytes", "Device memory in use.", "memory_used_bytes", 1.0),
    ("temperature_celsius", "GPU temperature.", "temperature_c", 1.0),
    ("sm_clock_hertz", "SM clock.", "sm_clock_mhz", 1e6),
    ("clock_event_reasons", "Bitmask of NVML clock event (throttle) reasons.", "throttle_reasons", 1.0),
)


class AgentCollector(Collector):
    def __init__(self, sampler: Sampler, stream: StreamClient) -> None:
        self._sampler = sampler
        self._stream = stream

    def collect(self) -> Iterator[Metric]:
        sampler = self._sampler
        latest = sampler.latest
        samples = dict(latest.samples)
        energy = dict(latest.energy)
        node = sampler.node_id
        labels = {g.uuid: [node, str(g.index), g.uuid, g.model] for g in sampler.inventory}

        for suffix, help_text, attr, scale in _GAUGES:
            family = GaugeMetricFamily(f"neocloud_gpu_{suffix}", help_text, labels=GPU_LABELS)
            for uuid, sample in samples.items():
                value = getattr(sample, attr)
                if value is not None and uuid in labels:
                    family.add_metric(labels[uuid], value * scale)
            yield family

        yield _per_gpu(
            GaugeMetricFamily("neocloud_gpu_memory_total_bytes", "Device memory.", labels=GPU_LABELS),
            labels,
            {g.uuid: g.memory_total_bytes for g in sampler.inventory},
        )
        yield _per_gpu(
            GaugeMetricFamily("neocloud_gpu_power_limit_watts", "Enforced power limit.", labels=GPU_LABELS),
            labels,
            {g.uuid: g.power_limit_mw / 1e3 for g in sampler.inventory},
        )
        yield _per_gpu(
            GaugeMetricFamily("neocloud_gpu_processes", "Compute processes on the GPU.", labels=GPU_LABELS),
            labels,
            {u: len(s.processes) for u, s in samples.items()},
        )
        yield _per_gpu(
            GaugeMetricFamily(
                "neocloud_gpu_processes_unavailable",
                "1 while the GPU's process list is unknown (NVML error or NotSupported, or the agent outside the "
                "host's PID namespace): the scheduler then frees none of its GPUs after a job.",
                labels=GPU_LABELS,
            ),
            labels,
            {u: int(s.processes_unavailable) for u, s in samples.items()},
        )
        yield _per_gpu(
            CounterMetricFamily(
                "neocloud_gpu_energy_joules", "Driver energy counter since driver load.", labels=GPU_LABELS
            ),
            labels,
            {u: e.energy_mj / 1e3 for u, e in energy.items()},
        )
        yield _per_gpu(
            CounterMetricFamily("neocloud_gpu_xid_errors", "XID errors seen by this agent.", labels=GPU_LABELS),
            labels,
            {g.uuid: latest.xid_errors[g.uuid] for g in sampler.inventory},
        )
        yield _per_gpu(
            CounterMetricFamily(
                "neocloud_gpu_energy_resets", "Times the energy counter went backwards.", labels=GPU_LABELS
            ),
            labels,
            {g.uuid: latest.counter_resets[g.uuid] for g in sampler.inventory},
        )
        yield _per_gpu(
            CounterMetricFamily(
                "neocloud_gpu_ecc_uncorrected_errors", "Volatile uncorrected ECC errors.", labels=GPU_LABELS
            ),
            labels,
            _ecc(samples),
        )
        yield from self._agent_metrics(node)
        build = build_labels()
        info = GaugeMetricFamily("neocloud_build_info", "Always 1: the versions this agent runs.", labels=list(build))
        info.add_metric(list(build.values()), 1.0)
        yield info

    def _agent_metrics(self, node: str) -> Iterator[Metric]:
        spool = self._sampler.spool.stats()
        stream = self._stream.stats
        latest = self._sampler.latest
        for family, value in (
            (
                GaugeMetricFamily("neocloud_agent_connected", "1 while the telemetry stream is up.", labels=["node"]),
                stream.connected,
            ),
            (
                GaugeMetricFamily("neocloud_agent_spool_batches", "Batches not yet acknowledged.", labels=["node"]),
                spool.batches,
            ),
            (
                GaugeMetricFamily("neocloud_agent_spool_bytes", "Bytes of unacknowledged batches.", labels=["node"]),
                spool.bytes,
            ),
            (
                CounterMetricFamily(
                    "neocloud_agent_dropped_samples", "Raw samples dropped at the spool bound.", labels=["node"]
                ),
                spool.dropped_samples_total,
            ),
            (
                CounterMetricFamily(
                    "neocloud_agent_rejected_batches", "Batches the scheduler rejected.", labels=["node"]
                ),
                spool.rejected_batches_total,
            ),
            (
                CounterMetricFamily("neocloud_agent_batches_sent", "Batches sent, resends included.", labels=["node"]),
                stream.batches_sent_total,
            ),
            (
                CounterMetricFamily("neocloud_agent_stream_sessions", "Telemetry streams opened.", labels=["node"]),
                stream.sessions_total,
            ),
            (
                CounterMetricFamily("neocloud_agent_read_errors", "GPU reads that failed.", labels=["node"]),
                latest.read_errors_total,
            ),
            (
                GaugeMetricFamily(
                    "neocloud_agent_last_ack_timestamp_seconds",
                    "When the scheduler last acknowledged.",
                    labels=["node"],
                ),
                stream.last_ack_unix_s,
            ),
        ):
            family.add_metric([node], float(value))
            yield family


def _per_gpu(
    family: GaugeMetricFamily | CounterMetricFamily, labels: dict[str, list[str]], values: dict[str, float]
) -> Metric:
    for uuid, value in values.items():
        if uuid in labels:
            family.add_metric(labels[uuid], value)
    return family


def _ecc(samples: dict[str, GpuSample]) -> dict[str, float]:
    return {u: s.ecc_uncorrected_total for u, s in samples.items() if s.ecc_uncorrected_total is not None}
