"""Prometheus collector for the scheduler: the fleet as telemetry shows it and
the health of ingest, built from live state at scrape time.

Per-tenant series carry the tenant's name, a hash of it, or nothing (`tenant_labels`
name | hash | off) for deployments whose metrics must not show who buys capacity."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from neocloud.domain.build import build_labels
from neocloud.domain.durations import Durations
from neocloud.scheduler.artifacts import LocalArtifactStore
from neocloud.scheduler.billing_runner import BillingRunner
from neocloud.scheduler.control.controller import Controller
from neocloud.scheduler.ingest.fleet import Fleet
from neocloud.scheduler.ingest.service import TelemetryService

GPU_LABELS = ["node", "gpu", "uuid", "model"]
REFUSAL_CODES = ("ABORTED", "FAILED_PRECONDITION", "INVALID_ARGUMENT", "PERMISSION_DENIED")
TenantLabels = Literal["name", "hash", "off"]
TENANT_LABEL_MODES: tuple[TenantLabels, ...] = ("name", "hash", "off")


def tenant_label(mode: TenantLabels, tenant: str) -> str:
    """The tenant label's value: the name; the first 16 hex digits of its SHA-256 (an operator
    finds a tenant's series with `printf %s NAME | sha256sum`; a guessable name can be confirmed,
    not read); or "" for every tenant (off: the series sum over tenants). Idle ("") stays ""."""
    if mode == "name" or not tenant:
        return tenant
    return hashlib.sha256(tenant.encode()).hexdigest()[:16] if mode == "hash" else ""


def per_tenant(
    family: GaugeMetricFamily | CounterMetricFamily,
    items: Iterable[tuple[tuple[str, ...], float]],
    tenant_at: int,
    mode: TenantLabels,
) -> GaugeMetricFamily | CounterMetricFamily:
    """Add (labels, value) items to `family` with the tenant label (at `tenant_at`) rewritten,
    summing the series that become one (every tenant's, with off)."""
    sums: dict[tuple[str, ...], float] = {}
    for labels, value in items:
        key = (*labels[:tenant_at], tenant_label(mode, labels[tenant_at]), *labels[tenant_at + 1 :])
        sums[key] = sums.get(key, 0.0) + value
    for key, value in sorted(sums.items()):
        family.add_metric(list(key), value)
    return family


def histogram(name: str, documentation: str, durations: Durations) -> HistogramMetricFamily:
    buckets, total = durations.snapshot()
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


def build_info() -> GaugeMetricFamily:
    labels = build_labels()
    family = GaugeMetricFamily("neocloud_build_info", "Always 1: the versions this process runs.", labels=list(labels))
    family.add_metric(list(labels.values()), 1.0)
    return family


class SchedulerCollector(Collector):
    def __init__(
        self, service: TelemetryService, controller: Controller | None = None, tenant_labels: TenantLabels = "name"
    ) -> None:
        self._service = service
        self._controller = controller
        self._tenant_labels = tenant_labels

    def collect(self) -> Iterator[Metric]:
        fleet = self._service.fleet
        nodes = list(fleet.nodes.values())
        connected = GaugeMetricFamily(
            "neocloud_node_connected", "1 while the node's agent is streaming.", labels=["node"]
        )
        last_seen = GaugeMetricFamily(
            "neocloud_node_last_batch_timestamp_seconds", "When the node's last batch arrived.", labels=["node"]
        )
        offset = GaugeMetricFamily(
            "neocloud_node_clock_offset_seconds",
            "Estimated scheduler clock minus agent clock (lower envelope of receive minus send).",
            labels=["node"],
        )
        dropped = CounterMetricFamily(
            "neocloud_node_dropped_samples", "Raw samples the node's agent dropped at its spool bound.", labels=["node"]
        )
        power = GaugeMetricFamily("neocloud_fleet_gpu_power_watts", "Last reported power draw.", labels=GPU_LABELS)
        util = GaugeMetricFamily(
            "neocloud_fleet_gpu_utilization_ratio", "Last reported utilisation.", labels=GPU_LABELS
        )
        energy = CounterMetricFamily(
            "neocloud_fleet_gpu_energy_joules",
            "Energy from the driver counter, accumulated by ingest.",
            labels=GPU_LABELS,
        )
        resets = CounterMetricFamily(
            "neocloud_fleet_gpu_energy_resets", "Energy counter resets bridged.", labels=GPU_LABELS
        )
        healthy = GaugeMetricFamily(
            "neocloud_fleet_gpu_healthy", "0 once a GPU reported a fatal error.", labels=GPU_LABELS
        )
        xids = CounterMetricFamily("neocloud_fleet_gpu_xid_errors", "XID errors reported.", labels=GPU_LABELS)
        sample_age = GaugeMetricFamily(
            "neocloud_fleet_gpu_last_sample_timestamp_seconds", "Agent time of the last sample.", labels=GPU_LABELS
        )
        for node in nodes:
            connected.add_metric([node.node_id], float(node.connected))
            last_seen.add_metric([node.node_id], node.last_seen_us / 1e6)
            dropped.add_metric([node.node_id], node.dropped_samples_total)
            if node.clock_offset_s is not None:
                offset.add_metric([node.node_id], node.clock_offset_s)
            for gpu in list(node.gpus.values()):
                labels = [node.node_id, str(gpu.index), gpu.uuid, gpu.model]
                series = gpu.last_series
                if series is not None and series.power_mw:
                    power.add_metric(labels, series.power_mw[-1] / 1e3)
                if series is not None and series.gpu_util_percent:
                    util.add_metric(labels, series.gpu_util_percent[-1] / 100)
                energy.add_metric(labels, gpu.energy.total_mj / 1e3)
                resets.add_metric(labels, gpu.energy.resets)
                healthy.add_metric(labels, float(gpu.unhealthy_reason is None))
                xids.add_metric(labels, gpu.xid_errors_total)
                if gpu.last_sample_us:
                    sample_age.add_metric(labels, gpu.last_sample_us / 1e6)
        yield from (connected, last_seen, offset, dropped, power, util, energy, resets, healthy, xids, sample_age)
        yield build_info()
        yield from self._ingest_metrics()
        if self._controller is not None:
            yield from self._controller_metrics(self._controller)

    def _controller_metrics(self, controller: Controller) -> Iterator[Metric]:
        stats = controller.stats
        yield CounterMetricFamily(
            "neocloud_scheduler_placements", "Jobs started by the policy.", value=stats.placements
        )
        yield CounterMetricFamily("neocloud_scheduler_preemptions", "Preemption notices sent.", value=stats.preemptions)
        yield CounterMetricFamily(
            "neocloud_scheduler_reclaim_warnings", "Early reclaim warnings raised.", value=stats.warnings
        )
        yield CounterMetricFamily(
            "neocloud_scheduler_step_errors", "Controller passes that failed.", value=stats.step_errors
        )
        yield CounterMetricFamily(
            "neocloud_scheduler_runner_watchdog_failures",
            "Ranks stopped by their runner because its watchdog failed (the job is requeued).",
            value=stats.watchdog_failures,
        )
        yield CounterMetricFamily(
            "neocloud_scheduler_repairs",
            "Crash leftovers set right: starts rolled back, stops finished, orphans removed from Ray.",
            value=stats.repairs,
        )
        yield histogram(
            "neocloud_scheduler_step_seconds",
            "Controller passes (events, policy, enactment) by duration.",
            stats.step_seconds,
        )
        yield GaugeMetricFamily(
            "neocloud_scheduler_pending_jobs", "Queued jobs waiting.", value=len(controller.pending)
        )
        yield GaugeMetricFamily(
            "neocloud_scheduler_gpus_awaiting_cleanup",
            "GPUs of released jobs not yet confirmed free of their processes by NVML.",
            value=sum(len(c.gpu_uuids) for c in list(controller.cleanups.values())),
        )
        view = controller.view  # one snapshot of the last pass
        yield GaugeMetricFamily(
            "neocloud_site_power_budget_watts", "The site's power budget ('inf': none).", value=view.power_budget_w
        )
        mode = self._tenant_labels
        yield per_tenant(
            GaugeMetricFamily(
                "neocloud_scheduler_allocated_gpus",
                "GPUs held by running jobs, by class and tenant.",
                labels=["class", "tenant"],
            ),
            list(view.allocated.items()),
            1,
            mode,
        )
        yield per_tenant(
            GaugeMetricFamily(
                "neocloud_contract_undelivered_gpus",
                "Reserved GPUs of an active contract the fleet cannot deliver now (cordoned, unhealthy, lost).",
                labels=["contract", "tenant"],
            ),
            list(view.undelivered.items()),
            1,
            mode,
        )

    def _ingest_metrics(self) -> Iterator[Metric]:
        service = self._service
        c = service.fleet.counters
        batches = CounterMetricFamily("neocloud_ingest_batches", "Telemetry batches by outcome.", labels=["result"])
        batches.add_metric(["accepted"], c.batches_accepted)
        batches.add_metric(["duplicate"], c.batches_duplicate)
        batches.add_metric(["rejected"], c.batches_rejected)
        yield batches
        yield CounterMetricFamily("neocloud_ingest_samples", "GPU samples accepted.", value=c.samples)
        yield CounterMetricFamily(
            "neocloud_ingest_energy_readings", "Energy-counter readings accepted.", value=c.energy_readings
        )
        yield CounterMetricFamily(
            "neocloud_ingest_energy_capped",
            "Energy readings whose credit was cut to the GPU model's rated power x span, or whose reset was past "
            "the per-GPU rate limit.",
            value=c.energy_capped,
        )
        yield CounterMetricFamily(
            "neocloud_ingest_gpu_claims_refused",
            "Hellos refused (PERMISSION_DENIED) for naming a GPU that another node registered first.",
            value=c.gpu_claims_refused,
        )
        refused = CounterMetricFamily(
            "neocloud_ingest_streams_refused", "Streams ended with an error status.", labels=["code"]
        )
        # Every code a refusal can carry is exported from the start, so that
        # increase() sees the first refusal too.
        for code in REFUSAL_CODES:
            refused.add_metric([code], c.streams_refused.get(code, 0))
        yield refused
        yield GaugeMetricFamily("neocloud_ingest_streams", "Open telemetry streams.", value=len(service.sessions))
        yield CounterMetricFamily(
            "neocloud_ingest_commits", "Durable commits of telemetry state.", value=service.commits_total
        )
        yield CounterMetricFamily(
            "neocloud_ingest_commit_failures",
            "Commits that failed (nothing acked).",
            value=service.commit_failures_total,
        )
        yield CounterMetricFamily(
            "neocloud_ingest_store_refusals",
            "Nodes whose data the store refused on its own: their stream ended, every other node's data committed.",
            value=service.store_refusals_total,
        )
        yield histogram(
            "neocloud_ingest_commit_seconds", "Telemetry commits (write, then ack) by duration.", service.commit_seconds
        )


class MeteringCollector(Collector):
    """Usage and the ledger's health, from the summary of the last ledger pass."""

    def __init__(self, runner: BillingRunner, fleet: Fleet, tenant_labels: TenantLabels = "name") -> None:
        self._runner = runner
        self._fleet = fleet
        self._tenant_labels = tenant_labels

    def collect(self) -> Iterator[Metric]:
        summary = self._runner.summary
        stats = self._runner.ledger.stats
        mode = self._tenant_labels
        # Gauges: a re-metered hour may correct a figure down (an end reported late), and the
        # month's first pass starts them again.
        yield per_tenant(
            GaugeMetricFamily(
                "neocloud_tenant_month_gpu_seconds",
                'GPU-seconds in the ledger this UTC month so far, by tenant and class (idle: tenant "", class idle).',
                labels=["tenant", "class"],
            ),
            list(summary.gpu_seconds.items()),
            0,
            mode,
        )
        yield per_tenant(
            GaugeMetricFamily(
                "neocloud_tenant_month_energy_joules",
                "Energy-counter joules in the ledger this UTC month so far, by tenant and class.",
                labels=["tenant", "class"],
            ),
            list(summary.energy_joules.items()),
            0,
            mode,
        )
        gap = GaugeMetricFamily(
            "neocloud_metering_reconciliation_gap_ratio",
            "|ledger rows - reference| / reference over metered hours: attributed counter deltas (energy), "
            "GPU wall time (GPU-seconds).",
            labels=["quantity"],
        )
        for quantity, ratio in sorted(summary.gap.items()):
            gap.add_metric([quantity], ratio)
        billed = GaugeMetricFamily(
            "neocloud_tenant_billed_amount",
            "What each tenant's invoice for the current month comes to so far, by class or line kind "
            "(needs --rate-card).",
            labels=["tenant", "class", "currency"],
        )
        amounts = [((tenant, cls, summary.currency), float(a)) for (tenant, cls), a in summary.billed.items()]
        yield from (gap, per_tenant(billed, amounts, 0, mode))
        yield per_tenant(
            CounterMetricFamily(
                "neocloud_billing_errors",
                "Ratings of a tenant's invoice for the current month that failed, by reason (one per ledger pass; "
                "every other tenant is billed as usual).",
                labels=["tenant", "reason"],
            ),
            [(key, float(n)) for key, n in summary.billing_errors.items()],
            0,
            mode,
        )
        if stats.passes_total:  # before the first pass there is no lag to report, only start-up
            yield GaugeMetricFamily(
                "neocloud_ledger_metered_to_timestamp_seconds",
                "The ledger covers the fleet up to this time (lag = time() - this).",
                value=stats.metered_to,
            )
        yield histogram("neocloud_ledger_pass_seconds", "Ledger passes by duration.", stats.pass_seconds)
        yield CounterMetricFamily(
            "neocloud_ledger_pass_failures", "Ledger passes that failed.", value=stats.failures_total
        )
        yield GaugeMetricFamily(
            "neocloud_metering_unattributed_joules",
            "Energy received and acknowledged that waits for the allocation book to be attributed.",
            value=self._fleet.attributor.pending_mj / 1000,
        )


class WorkdirCollector(Collector):
    """Uploaded workdirs: what the retention sweeps released."""

    def __init__(self, artifacts: LocalArtifactStore) -> None:
        self._artifacts = artifacts

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "neocloud_scheduler_workdirs_released",
            "Tenants' workdir archives released after workdir_retention_s unused (no longer charged or usable).",
            value=self._artifacts.released_total,
        )
