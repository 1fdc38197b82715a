"""`neocloud demo`: a whole neocloud on this machine, playing a scenario.

The scheduler (SQLite store, embedded multi-node Ray cluster), one simulated
8-GPU node per --nodes with its agent streaming over mTLS (site.py), and
the scenario's people submitting and cancelling jobs through the gRPC API
(player.py): the lab's internal demand declines, tenants buy the freed
capacity (a reserved power contract, spot filling the rest), then an internal
spike takes capacity back with preemption notices. A live view (view.py)
shows it; at the end, each tenant's jobs and GPU-seconds, then the money
(billing.py): invoices rated from the ledger and the fleet split.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TextIO

import grpc

from neocloud.demo import scenario as demo_scenario
from neocloud.demo import view as demo_view
from neocloud.demo.billing import EXAMPLE_RATECARD, DemoBooks, demo_ratecard
from neocloud.demo.player import INTERNAL, Player
from neocloud.demo.site import GPUS_PER_NODE, Site
from neocloud.domain.errors import NeocloudError
from neocloud.scheduler.server import Scheduler
from neocloud.scheduler.store import JobState, JobStore
from neocloud.wire import tls

logger = logging.getLogger(__name__)

REFRESH_S = 1.0
WIND_DOWN_S = 60.0  # after the end: how long jobs get to stop once cancelled
MAX_NODES = 32
MAX_SPEED = 600.0  # a demo minute of 0.1 s: faster than the scheduler can follow
EXIT_INTERRUPTED = 130


# --- billing (billing.py) ------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRun:
    """What the view and the end of the demo read money from. Demo time runs `speed` times
    faster than the wall clock the scheduler keeps: wall seconds x speed = demo seconds."""

    scheduler: Scheduler  # .jobs (JobStore: allocations, contracts), .db, .config.db_path, .telemetry
    start: float  # Unix seconds of demo minute 0
    speed: float
    tenants: tuple[str, ...]
    contract_ids: Mapping[str, str]  # tenant -> its contract's id
    books: DemoBooks


def revenue_so_far(run: DemoRun, now: float) -> Decimal | None:
    """What tenants owe so far, from the ledger (brought up to date every few seconds)."""
    try:
        return run.books.revenue()
    except NeocloudError as e:  # a rate card the contracts do not fit: shown once in the log, not live
        logger.warning("revenue not shown: %s", e)
        return None


def print_invoices(run: DemoRun, out: TextIO) -> None:
    """Each tenant's invoice for the month the demo ran in, the fleet split, and a check of the
    invoiced usage against the ledger's rows."""
    run.books.close()
    run.books.print_invoices(out)


# --- the command (its options: neocloud/cli/demo.py) ----------------------------------------------


class _Terminated(Exception):
    """SIGTERM: stop as for Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _options(args: argparse.Namespace) -> demo_scenario.Scenario:
    """The scenario with --minutes and --speed applied; ScenarioError or ValueError says what is wrong."""
    if not 1 <= args.nodes <= MAX_NODES:
        raise ValueError(f"--nodes must be 1 to {MAX_NODES}, not {args.nodes}")
    for name, value, high in (("--minutes", args.minutes, 10_000.0), ("--speed", args.speed, MAX_SPEED)):
        if value is not None and not (math.isfinite(value) and 0 < value <= high):
            raise ValueError(f"{name} must be more than 0 and at most {high:g}, not {value:g}")
    work = Path(args.work_dir) if args.work_dir is not None else None
    if work is not None and work.exists() and (not work.is_dir() or any(work.iterdir())):
        raise ValueError(f"--work-dir {work} must be an empty directory or not exist yet")
    scenario = demo_scenario.load(args.scenario or demo_scenario.DEFAULT_FILE)
    scenario = replace(scenario, minutes=args.minutes or scenario.minutes, speed=args.speed or scenario.speed)
    scenario.check_fleet(args.nodes * GPUS_PER_NODE)
    return scenario


def run(args: argparse.Namespace) -> int:
    try:
        scenario = _options(args)
    except (ValueError, demo_scenario.ScenarioError) as e:
        print(f"neocloud demo: {e}", file=sys.stderr)
        return 2
    if logging.getLogger().level == logging.INFO:  # the default: the live view is the demo's output
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("neocloud.scheduler.server").setLevel(logging.ERROR)  # the token file is ours
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        if args.work_dir is None:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="neocloud-demo-"))
        else:
            tmp = str(Path(args.work_dir).resolve())
            Path(tmp).mkdir(parents=True, exist_ok=True)
        site = Site(Path(tmp), args.nodes)
        try:
            print(f"starting a scheduler, a Ray cluster and {args.nodes} agents in {tmp} ...", flush=True)
            if args.work_dir is not None:
                print(f"(kept afterwards: the store {tmp}/scheduler.db, job logs, {tmp}/operator-token)", flush=True)
            site.start()
            _play(site, scenario, sys.stdout, started)
            return 0
        except (KeyboardInterrupt, _Terminated) as e:
            print("\nneocloud demo: interrupted; stopping agents, Ray and the scheduler", file=sys.stderr)
            return EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM
        except (RuntimeError, OSError, tls.TlsConfigError, grpc.RpcError, grpc.FutureTimeoutError) as e:
            print(f"neocloud demo: {e}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not strand processes
            site.stop()
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


def _play(site: Site, scenario: demo_scenario.Scenario, out: TextIO, started: float) -> None:
    ca, cert, key = site.client_tls()
    channel = grpc.secure_channel(site.address, tls.channel_credentials(str(ca), str(cert), str(key)))
    try:
        grpc.channel_ready_future(channel).result(timeout=30)  # the first calls must not race the handshake
        player = Player(scenario, site.fleet_gpus, channel, site.operator_token(), site.upload_workdir)
        if player.skipped():
            print(
                f"note: {player.skipped()} scenario events after minute {scenario.minutes:g} will not happen", file=out
            )
        t0, t0_wall = time.monotonic(), time.time()
        player.setup(t0_wall, EXAMPLE_RATECARD.read_text(encoding="utf-8"))
        tenants = tuple(t.name for t in scenario.tenants)
        books = DemoBooks(site.scheduler.scheduler, demo_ratecard(), tenants)
        billing = DemoRun(site.scheduler.scheduler, t0_wall, scenario.speed, tenants, dict(player.contract_ids), books)
        tty = out.isatty()
        notices = _Notices()
        while True:
            minute = min((time.monotonic() - t0) * scenario.speed / 60.0, scenario.minutes)
            player.advance(minute)
            notices.poll(site.scheduler.scheduler.jobs, player, billing)
            _show(out, tty, snapshot(site, player, billing, minute))
            if minute >= scenario.minutes:
                break
            time.sleep(REFRESH_S - (time.monotonic() - t0) % REFRESH_S)
        player.finish()
        _wind_down(site, out, tty, player, billing, minute)
        wall = time.monotonic() - t0
        if tty:  # the last frame: every job stopped, the agents still reporting
            _show(out, tty, snapshot(site, player, billing, minute))
        site.stop_agents()  # their last batches are in: the energy figures are final
        out.write("\n" + summary(site, player, billing, wall, time.monotonic() - started) + "\n")
        print_invoices(billing, out)  # every job has stopped: its allocations are closed
        out.flush()
    finally:
        channel.close()


class _Notices:
    """Preemption notices the scheduler gave, from the store, for the view's list of events."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}  # job id -> last event id read

    def poll(self, store: JobStore, player: Player, run: DemoRun) -> None:
        for owner, job_ids in player.jobs.items():
            for job_id in job_ids:
                for e in store.events_since(job_id, self._seen.get(job_id, 0)):
                    self._seen[job_id] = e.event_id
                    if e.kind == "preemption_notice":
                        minute = (e.at - run.start) * run.speed / 60.0
                        player.events.append(f"min {minute:4.1f}  notice to {owner}'s {job_id}: {e.message}")


def _wind_down(site: Site, out: TextIO, tty: bool, player: Player, run: DemoRun, minute: float) -> None:
    """Wait (showing it) until every cancelled job has stopped and its GPUs are free."""
    sched = site.scheduler.scheduler
    controller = sched.controller
    deadline = time.monotonic() + WIND_DOWN_S
    while sched.jobs.running() or (controller is not None and controller.cleanups):
        if time.monotonic() > deadline:
            logger.warning("jobs still stopping after %.0f s; tearing down anyway", WIND_DOWN_S)
            return
        time.sleep(REFRESH_S / 2)
        if tty:
            _show(out, tty, snapshot(site, player, run, minute))


def _show(out: TextIO, tty: bool, snap: demo_view.Snapshot) -> None:
    if tty:
        out.write(demo_view.HOME_AND_CLEAR + demo_view.render_screen(snap, color=True) + "\n")
    else:
        out.write(demo_view.render_line(snap) + "\n")
    out.flush()


# --- what the scheduler knows, for the view and the summary -------------------------------------


def snapshot(site: Site, player: Player, run: DemoRun, minute: float) -> demo_view.Snapshot:
    sched = site.scheduler.scheduler
    store, fleet = sched.jobs, sched.telemetry.fleet
    owner: dict[str, demo_view.GpuCell] = {}
    reserved_gpus: dict[str, list[str]] = {}
    for job, allocations in store.running():
        stopping = job.state is JobState.PREEMPTING or job.cancel_requested
        cell = demo_view.GpuCell(job.job_class.name.lower(), job.tenant, stopping)
        for a in allocations:
            owner.update(dict.fromkeys(a.gpu_uuids, cell))
            if job.spec.contract_id:
                reserved_gpus.setdefault(job.tenant, []).extend(a.gpu_uuids)
    power_mw: dict[str, int] = {}
    rows = []
    for node_id in sorted(fleet.nodes):
        node = fleet.nodes[node_id]
        gpus = sorted(list(node.gpus.values()), key=lambda g: g.index)
        power_mw.update((g.uuid, g.last_power_mw) for g in gpus)
        cells = tuple(owner.get(g.uuid, demo_view.GpuCell()) for g in gpus)
        rows.append(demo_view.NodeRow(node_id, cells, sum(g.last_power_mw for g in gpus) / 1e3, node.connected))
    queued: dict[str, int] = {}
    for job in store.queued():
        queued[job.job_class.name.lower()] = queued.get(job.job_class.name.lower(), 0) + 1
    contracts = tuple(
        demo_view.ContractUse(
            c.tenant,
            c.power_w or None,
            c.gpus or None,
            sum(power_mw.get(u, 0) for u in reserved_gpus.get(c.tenant, ())) / 1e3,
            len(reserved_gpus.get(c.tenant, ())),
        )
        for c in store.list_contracts()
    )
    config = store.policy_config()
    return demo_view.Snapshot(
        minute=minute,
        minutes=player.scenario.minutes,
        speed=player.scenario.speed,
        nodes=tuple(rows),
        power_w=sum(r.power_w for r in rows),
        budget_w=config.site_power_budget_w,
        internal_demand_gpus=player.internal_demand,
        internal_floor_gpus=config.internal_floor_gpus,
        queued=queued,
        preemptions=sched.controller.stats.preemptions if sched.controller is not None else 0,
        tenants=run.tenants,
        contracts=contracts,
        revenue=revenue_so_far(run, time.time()),
        events=tuple(player.events[-6:]),
    )


def summary(site: Site, player: Player, run: DemoRun, wall_s: float, total_s: float) -> str:
    sched = site.scheduler.scheduler
    store = sched.jobs
    gpu_s = store.usage_gpu_seconds_since(run.start, time.time())
    rows = []
    for tenant in (INTERNAL, *run.tenants):
        jobs = [store.get(j) for j in player.jobs.get(tenant, ())]
        states = [j.state for j in jobs]
        notices = sum(
            1 for j in jobs for e in store.events_since(j.job_id) if e.kind == "preemption_notice"
        )  # fmt: skip
        classes = ",".join(sorted({j.job_class.name.lower() for j in jobs})) or "-"
        rows.append((tenant, classes, len(jobs), states.count(JobState.SUCCEEDED), states.count(JobState.CANCELLED),
                     states.count(JobState.FAILED), notices, f"{gpu_s.get(tenant, 0.0):,.0f}"))  # fmt: skip
    head = ("tenant", "class", "jobs", "done", "cancelled", "failed", "preempted", "GPU-seconds")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    lines = [
        f"neocloud demo: {player.scenario.minutes:g} demo minutes in {wall_s:.0f} s "
        f"({total_s:.0f} s with start-up and shutdown), {len(site.node_ids)} nodes x {GPUS_PER_NODE} GPUs",
        "",
        *(_row(r, widths) for r in (head, *rows)),
    ]
    fleet = sched.telemetry.fleet
    energy = {
        n: sum(g.energy.total_mj for g in list(fleet.nodes[n].gpus.values())) / 3.6e9 for n in sorted(fleet.nodes)
    }
    lines += ["", "energy by node (driver counters): " + ", ".join(f"{n} {kwh:.3f} kWh" for n, kwh in energy.items())]
    lines += [f"preemptions: {sched.controller.stats.preemptions if sched.controller else 0} "
              "(notice file + SIGTERM, grace, then the job is requeued and resumes from its checkpoint)"]  # fmt: skip
    lines += _shipped(store, player)
    lines += ["", "Prometheus endpoints (gone now):", f"  scheduler  {site.metrics_url}"]
    lines += [f"  {node}  {url}" for node, url in site.agent_metrics.items()]
    return "\n".join(lines)


def _shipped(store: JobStore, player: Player) -> list[str]:
    """Which jobs ran code their tenant shipped, from which digest, where, and in what sandbox."""
    lines = []
    for job_id, digest in player.shipped.items():
        job = store.get(job_id)
        ranks = store.allocations(job_id)
        nodes = sorted({a.node_id for a in ranks})
        where = f"ran on {', '.join(nodes)}" if ranks else "never ran"
        sandboxes = [_sandbox_text(a.sandbox) for a in ranks]
        lines.append(f"shipped code: {job.tenant}'s {job_id} ({job.state.name.lower()}) {where}, "
                     f"from workdir {digest}; " + ("; ".join(sorted(set(sandboxes))) or "no sandbox yet"))  # fmt: skip
    return ["", *lines] if lines else []


def _sandbox_text(proof: str) -> str:
    try:
        fields = json.loads(proof)
    except ValueError:
        return f"sandbox: {proof or 'none recorded'}"
    if "uid" in fields:
        return f"sandboxed as uid {fields['uid']}, {len(fields.get('devices', ()))} devices, cgroup {fields['cgroup']}"
    return f"unsandboxed ({', '.join(fields.get('unsandboxed', ())) or 'no reason given'})"


def _row(cells: tuple[object, ...], widths: list[int]) -> str:
    """Names left-aligned, numbers right-aligned."""
    return "  ".join(
        str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()
