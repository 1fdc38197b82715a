"""Agent-side conversion of backend readings into neocloud.v1 messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from neocloud import __version__
from neocloud.domain.gpu import EnergyReading, GpuInfo, GpuSample, HealthEvent, PowerSample, Reading
from neocloud.v1 import telemetry_pb2 as pb

# Columns of GpuSeries filled from GpuSample fields of the same name.
SAMPLE_COLUMNS = (
    "power_mw",
    "gpu_util_percent",
    "memory_util_percent",
    "memory_used_bytes",
    "temperature_c",
    "sm_clock_mhz",
    "throttle_reasons",
)


def hello(node_id: str, stream_epoch: int, inventory: Sequence[GpuInfo], backend: str) -> pb.AgentMessage:
    return pb.AgentMessage(
        hello=pb.Hello(
            node_id=node_id,
            agent_version=__version__,
            stream_epoch=stream_epoch,
            backend=backend,
            gpus=[
                pb.GpuInfo(
                    index=g.index,
                    uuid=g.uuid,
                    model=g.model,
                    memory_total_bytes=g.memory_total_bytes,
                    power_limit_mw=g.power_limit_mw,
                )
                for g in inventory
            ],
        )
    )


def build_batch(
    node_id: str, inventory: Sequence[GpuInfo], readings: Iterable[Reading], agent_time_us: int
) -> pb.Batch:
    """One Batch from the readings of one or more ticks (seq is set by the spool)."""
    samples: dict[str, list[GpuSample]] = {g.uuid: [] for g in inventory}
    energy: dict[str, list[EnergyReading]] = {g.uuid: [] for g in inventory}
    power: dict[str, list[PowerSample]] = {g.uuid: [] for g in inventory}
    events: list[HealthEvent] = []
    for reading in readings:
        for s in reading.samples:
            samples[s.uuid].append(s)
        for e in reading.energy:
            energy[e.uuid].append(e)
        for p in reading.power_samples:
            power[p.uuid].append(p)
        events.extend(reading.events)
    batch = pb.Batch(node_id=node_id, agent_time_us=agent_time_us)
    for gpu in inventory:
        series = batch.gpus.add(uuid=gpu.uuid)
        _fill_series(series, samples[gpu.uuid], energy[gpu.uuid], power[gpu.uuid])
    for ev in events:
        batch.events.add(timestamp_us=ev.timestamp_us, uuid=ev.uuid, kind=ev.kind, xid=ev.xid, detail=ev.detail)
    return batch


def _fill_series(
    series: pb.GpuSeries,
    samples: list[GpuSample],
    energy: list[EnergyReading],
    power: list[PowerSample],
) -> None:
    series.timestamp_us.extend(s.timestamp_us for s in samples)
    for column in SAMPLE_COLUMNS:
        values = [getattr(s, column) for s in samples]
        # A column is all-or-nothing: a field a read missed is left out of
        # this batch rather than filled with a value nobody measured.
        if values and None not in values:
            getattr(series, column).extend(values)
    for e in energy:
        series.energy.add(timestamp_us=e.timestamp_us, energy_mj=e.energy_mj, counter_reset=e.counter_reset)
    series.power_sample_us.extend(p.timestamp_us for p in power)
    series.power_sample_mw.extend(p.power_mw for p in power)
    if samples:
        last = samples[-1]
        for proc in last.processes:
            series.processes.add(
                pid=proc.pid,
                used_memory_bytes=proc.used_memory_bytes,
                pid_namespace=proc.pid_namespace,
                namespace_pids=proc.namespace_pids,
            )
        series.processes_unavailable = last.processes_unavailable
        if last.ecc_corrected_total is not None:
            series.ecc_corrected_total = last.ecc_corrected_total
        if last.ecc_uncorrected_total is not None:
            series.ecc_uncorrected_total = last.ecc_uncorrected_total


def strip_raw_samples(batch: pb.Batch) -> int:
    """Drop a batch's raw samples in place, keeping its energy-counter readings,
    ECC counts and health events; returns how many samples were dropped."""
    dropped = 0
    for series in batch.gpus:
        dropped += len(series.timestamp_us)
        for column in (
            "timestamp_us",
            *SAMPLE_COLUMNS,
            "power_sample_us",
            "power_sample_mw",
            "processes",
            "processes_unavailable",
        ):
            series.ClearField(column)
    return dropped
