"""`neocloud bench ...`: performance targets, measured, printed as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="measure performance targets; prints one JSON object")
    kinds = p.add_subparsers(dest="bench", metavar="BENCH")
    kinds.required = True
    ingest = kinds.add_parser(
        "ingest",
        help="scheduler: GPU samples accepted per CPU-second (target >= 250,000)",
        description="Start a scheduler in this process and load-generator processes that stream 8-GPU batches "
        "over real gRPC; report samples accepted per CPU-second of the scheduler process.",
    )
    ingest.add_argument("--processes", type=int, default=2, help="load-generator processes (default: %(default)s)")
    ingest.add_argument("--streams", type=int, default=16, help="node streams per process (default: %(default)s)")
    ingest.add_argument(
        "--ticks-per-batch",
        type=int,
        default=10,
        help="1 Hz ticks per batch, 8 samples each; 10 is the agent's default (default: %(default)s)",
    )
    ingest.add_argument("--seconds", type=float, default=20.0, help="measured seconds (default: %(default)s)")
    ingest.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring (default: %(default)s)")
    ingest.set_defaults(func=_ingest)
    agent = kinds.add_parser(
        "agent",
        help="agent: CPU percent of one core for one simulated 8-GPU node at 1 Hz (target < 0.5)",
        description="Run `neocloud agent --backend sim` as a child process streaming to a scheduler, scrape its "
        "/metrics, and report the agent process's CPU time as a percentage of one core.",
    )
    agent.add_argument("--seconds", type=float, default=60.0, help="measured seconds (default: %(default)s)")
    agent.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (default: %(default)s)")
    agent.add_argument(
        "--scrape-interval", type=float, default=15.0, help="seconds between /metrics scrapes (default: %(default)s)"
    )
    agent.set_defaults(func=_agent)
    sched = kinds.add_parser(
        "schedule",
        help="scheduler: one policy pass over 230,400 GPUs (target < 100 ms) and API admissions/s (target >= 1,000)",
        description="Time one policy pass over a simulated 28,800-node x 8-GPU fleet with 10,000 queued jobs, and "
        "jobs submitted per second through the gRPC JobService with state persisted in SQLite. With --ray, also "
        "submit-to-running and preempt-to-free on a local multi-node Ray cluster (fake GPUs).",
    )
    sched.add_argument("--nodes", type=int, default=28_800, help="simulated nodes (default: %(default)s)")
    sched.add_argument("--queued", type=int, default=10_000, help="queued jobs (default: %(default)s)")
    sched.add_argument("--seconds", type=float, default=10.0, help="seconds of API load (default: %(default)s)")
    sched.add_argument("--clients", type=int, default=8, help="concurrent API clients (default: %(default)s)")
    sched.add_argument("--ray", action="store_true", help="also time jobs on a local Ray cluster")
    sched.set_defaults(func=_schedule)
    meter = kinds.add_parser(
        "meter",
        help="metering: close one hour of 230,400 GPUs into the ledger (target < 5 s), invoice 1,000 tenants (< 10 s)",
        description="Fill a store with one hour of a 28,800-node x 8-GPU fleet (allocations and the energy ingest "
        "attributed) and time the ledger closing it, one usage row per GPU-allocation-hour; then a month of usage "
        "for 1,000 tenants and time rating every invoice.",
    )
    meter.add_argument("--nodes", type=int, default=28_800, help="8-GPU nodes (default: %(default)s)")
    meter.add_argument("--tenants", type=int, default=1000, help="tenants to invoice (default: %(default)s)")
    meter.set_defaults(func=_meter)
    chaos = kinds.add_parser(
        "chaos",
        help="telemetry: N agents through cuts, resets, blackholes and kill -9s; lost, double-counted, energy off",
        description="Start a scheduler process (mTLS, on a fresh store) and agents in agent-host processes (25 "
        "each), all through a proxy that cuts, resets and blackholes connections, while a schedule drawn from the "
        "seed kill -9s agent hosts and the scheduler (each restarted on its spools or store), and a hostile node "
        "sends garbage, absurd values and another node's GPU. Then every spool drains and the store is compared "
        "with what the simulated GPUs produced. Prints one JSON line (progress on stderr every 10 s); exits 1 "
        "if a sample was lost or counted twice or the energy differs by a millijoule.",
    )
    chaos.add_argument("--agents", type=int, default=100, help="agents, one node each (default: %(default)s)")
    chaos.add_argument("--gpus-per-agent", type=int, default=2, help="simulated GPUs per agent (default: %(default)s)")
    chaos.add_argument("--seconds", type=float, default=180.0, help="seconds of faults (default: %(default)s)")
    chaos.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default: %(default)s)")
    chaos.add_argument("--hostile", type=int, choices=(0, 1), default=1, help="a hostile node (default: %(default)s)")
    chaos.add_argument(
        "--fault-every", type=float, default=3.0, help="mean seconds between faults (default: %(default)s)"
    )
    chaos.add_argument("--tick", type=float, default=1.0, help="agents' sample interval, s (default: %(default)s)")
    chaos.add_argument("--work-dir", help="keep the store, spools, truth logs and process logs here")
    chaos.set_defaults(func=_chaos)
    box = kinds.add_parser(
        "sandbox",
        help="tenant sandbox: extra seconds from submit to running, and CPU per rank (sandboxed vs not)",
        description="Measure what the tenant sandbox (bubblewrap, setpriv, a cgroup per rank) costs. On this node: "
        "the node probe's wall seconds; for ranks that write the time and exit, spawned as a runner spawns them, "
        "sandboxed and not: spawn to the job's first instruction, the setup (wall and the runner's CPU) and the CPU "
        "of the rank's whole process tree; that CPU for a rank of each kind that sleeps --seconds, and the rank "
        "cgroup's own CPU account where the node keeps one. On a local two-node Ray cluster (fake GPUs): 1-GPU "
        "jobs, alternately a tenant's (sandboxed) and one without a tenant (never sandboxed), timed from start() to "
        "Started and to the job's first instruction. Parts that need root and bubblewrap say 'skipped' and why "
        "where this node lacks them.",
    )
    box.add_argument(
        "--runs",
        type=int,
        default=10,
        help="probes, ranks of each kind spawned directly, and Ray jobs (half sandboxed) (default: %(default)s)",
    )
    box.add_argument(
        "--seconds", type=float, default=10.0, help="how long the `sleep` ranks run (default: %(default)s)"
    )
    box.set_defaults(func=_sandbox)


def _ingest(args: argparse.Namespace) -> int:
    from neocloud.bench import ingest

    print(json.dumps(ingest.run(args.processes, args.streams, args.ticks_per_batch, args.seconds, args.warmup)))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from neocloud.bench import agent

    print(json.dumps(agent.run(args.seconds, args.warmup, args.scrape_interval)))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from neocloud.bench.admissions import admissions
    from neocloud.bench.schedule import policy_pass

    result = policy_pass(args.nodes, args.queued)
    result.update(admissions(args.seconds, args.clients))
    if args.ray:
        from neocloud.bench.schedule_ray import ray_timings

        result.update(ray_timings())
    print(json.dumps(result))
    return 0


def _chaos(args: argparse.Namespace) -> int:
    from neocloud.bench import chaos
    from neocloud.bench.verify import passed

    if args.agents < 1 or not 1 <= args.gpus_per_agent <= 64 or args.seconds <= 0 or args.tick <= 0:
        print("neocloud bench chaos: --agents >= 1, --gpus-per-agent 1..64, --seconds and --tick > 0", file=sys.stderr)
        return 2
    result = chaos.run(
        chaos.Settings(
            args.agents, args.gpus_per_agent, args.seconds, args.seed, bool(args.hostile), args.fault_every, args.tick
        ),
        args.work_dir,
    )
    print(json.dumps(result), flush=True)
    return 0 if passed(result) else 1


def _sandbox(args: argparse.Namespace) -> int:
    from neocloud.bench import sandbox

    if not 2 <= args.runs <= 1000 or not 0 < args.seconds <= 3600:
        print("neocloud bench sandbox: --runs in [2, 1000] (both kinds), --seconds in (0, 3600]", file=sys.stderr)
        return 2
    print(json.dumps(sandbox.run(args.runs, args.seconds)))
    return 0


def _meter(args: argparse.Namespace) -> int:
    from neocloud.bench.meter import close_hour, invoices

    if args.nodes < 1 or args.tenants < 1:
        print("neocloud bench meter: --nodes and --tenants must be positive", file=sys.stderr)
        return 2
    result = {"benchmark": "meter", **close_hour(args.nodes), **invoices(args.tenants)}
    print(json.dumps(result))
    return 0
