"""The measured cost of the tenant sandbox (issue 10): the extra seconds from submit to running,
and the CPU per rank, sandboxed (a tenant's rank) against unsandboxed (a job without a tenant:
the lab's tooling, which is never sandboxed).

- On this node, without Ray: the node probe (`sandbox.probe()`, once per node), and ranks that
  only write the time (`stamped()`) spawned the way a runner spawns them (`procs.spawn_sandboxed`
  / `procs.spawn`): spawn -> the job's first instruction, the setup's wall seconds and the
  runner's own CPU (Sandbox.command + spawn), and the CPU of the rank's whole process tree. That
  CPU is this process's children's rusage: every process of a rank is reaped by its parent up to
  the leader, reaped here. A rank of each kind that sleeps S seconds shows what a rank costs while
  it runs; its cgroup's own CPU account is reported too where the node keeps one (v2, or v1
  cpuacct mounted with cpu).
- On a local two-node Ray cluster (fake GPUs): 1-GPU jobs, alternately sandboxed and not, whose
  first instruction writes the time into their job directory: start() -> Started and start() ->
  that first instruction.

A part that needs the sandbox where this node cannot enforce it says "skipped" and why; no figure
is made up. The direct part runs before Ray starts: Ray's processes, reaped here at its shutdown,
would count as children's CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.bench.schedule_ray import POLL_S, _is, _wait
from neocloud.scheduler.executor import (
    ExecJob,
    ExecutorEvent,
    Exited,
    LocalCluster,
    RayExecutor,
    Released,
    Started,
    procs,
    sandbox,
)

TENANT = "bench-tenant"
FIRST_INSTRUCTION = "first-instruction"
NODES = ("node-a", "node-b")
TIMEOUT_S = 60.0


def stamped(sleep_s: float = 0.0) -> list[str]:
    """A job whose first instruction writes the time into its job directory, where its checkpoint
    file is (its cwd only when sandboxed; `${var%/*}` costs no process), then sleeps `sleep_s`."""
    first = f'date +%s.%N > "${{NEOCLOUD_CHECKPOINT_FILE%/*}}/{FIRST_INSTRUCTION}"'
    return ["sh", "-c", f"{first}; exec sleep {sleep_s}" if sleep_s else first]


@dataclass(frozen=True)
class RankCost:
    setup_s: float  # wall seconds of Sandbox.command + spawn, in the runner
    runner_cpu_s: float  # the runner's own CPU for that setup
    first_instruction_s: float  # from the start of the setup to the job's first instruction
    rank_cpu_s: float  # CPU of the rank's whole process tree, start to exit
    cgroup_cpu_s: float | None  # the rank's cgroup CPU account (None: unsandboxed, or no account here)


def run(runs: int = 10, seconds: float = 10.0) -> dict[str, Any]:
    probes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        caps = sandbox.probe()
        probes.append(time.perf_counter() - t0)
    skipped = None if caps.full else f"this node cannot sandbox: missing {', '.join(caps.missing)}"
    result: dict[str, Any] = {
        "benchmark": "sandbox",
        "runs": runs,
        "node": {
            "cgroup_version": sandbox.cgroup_version(),
            "root": os.geteuid() == 0,
            "bwrap": caps.bwrap,
            "uid_switch": caps.uid_switch,
            "cgroup": caps.cgroup,
            "missing": list(caps.missing),
        },
        "probe_s": _round(statistics.median(probes)),
        "probe_all_s": _round_all(probes),
    }
    result.update({"skipped": skipped} if skipped else direct_costs(caps, runs, seconds))
    result["ray"] = ray_costs(runs, skipped)
    return result


def direct_costs(caps: sandbox.Capabilities, runs: int, seconds: float) -> dict[str, Any]:
    """Ranks spawned here as a runner spawns them: `runs` stamped ranks of each kind, then one that
    sleeps `seconds` of each kind."""
    box = sandbox.Sandbox(caps)
    with tempfile.TemporaryDirectory(prefix="neocloud-bench-sandbox-") as tmp:

        def rank(name: str, boxed: bool, sleep_s: float = 0.0) -> RankCost:
            job_dir = Path(tmp) / f"bench-{os.getpid()}-{name}"
            return _rank(job_dir, stamped(sleep_s), box if boxed else None, caps.cgroup)

        rank("warm", False)  # the first spawn starts this process's sweeper
        rank("warm-box", True)
        plain, boxed = [], []
        for i in range(runs):
            plain.append(rank(f"stamp-{i}", False))
            boxed.append(rank(f"stamp-box-{i}", True))
        sleep_plain = rank("sleep", False, seconds)
        sleep_boxed = rank("sleep-box", True, seconds)
    cgroup_cpu = [c.cgroup_cpu_s for c in boxed if c.cgroup_cpu_s is not None]
    no_account = {"skipped": f"no CPU account in a rank's {caps.cgroup} cgroup here (cpuacct not mounted with cpu)"}
    return {
        "spawn_to_first_instruction": _compare(
            [c.first_instruction_s for c in boxed], [c.first_instruction_s for c in plain]
        ),
        "setup_wall": _compare([c.setup_s for c in boxed], [c.setup_s for c in plain]),
        "setup_runner_cpu": _compare([c.runner_cpu_s for c in boxed], [c.runner_cpu_s for c in plain]),
        "rank_cpu": _compare([c.rank_cpu_s for c in boxed], [c.rank_cpu_s for c in plain]),
        "rank_cpu_sleep": {
            "seconds": seconds,
            **_compare([sleep_boxed.rank_cpu_s], [sleep_plain.rank_cpu_s]),
        },
        "cgroup_cpu": {"sandboxed_s": _round(statistics.median(cgroup_cpu))} if cgroup_cpu else no_account,
        "cgroup_cpu_sleep": {"sandboxed_s": _round(sleep_boxed.cgroup_cpu_s)}
        if sleep_boxed.cgroup_cpu_s is not None
        else no_account,
    }


def _rank(job_dir: Path, argv: list[str], box: sandbox.Sandbox | None, cgroup: str) -> RankCost:
    """Spawn one rank (in `box` if given) in its own job directory and wait until all of it is gone."""
    job_dir.mkdir()
    log = job_dir / "rank-0.log"
    env = {**procs.base_env(), "NEOCLOUD_CHECKPOINT_FILE": str(job_dir / "rank-0.checkpoint")}
    children_cpu = _children_cpu_s()
    start, wall, cpu = time.time(), time.perf_counter(), time.process_time()
    if box is None:
        proc = procs.spawn(argv, env, log)
    else:
        spec = sandbox.SandboxSpec(job_id=job_dir.name, rank=0, tenant=TENANT, job_dir=job_dir)
        proc, _ = procs.spawn_sandboxed(argv, env, log, spec, box)
    setup_s, runner_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    if proc.wait() != 0:
        raise RuntimeError(f"bench rank {argv} exited {proc.returncode}: {log.read_text()!r}")
    rank_cpu_s = _children_cpu_s() - children_cpu
    # Read before group_gone() removes the rank's cgroup.
    cgroup_cpu_s = None if box is None else read_cgroup_cpu_s(sandbox.RankCgroup(f"{job_dir.name}-0", cgroup))
    while not procs.group_gone(proc.pid):
        time.sleep(POLL_S)
    first_instruction_s = _stamp(job_dir / FIRST_INSTRUCTION) - start
    return RankCost(setup_s, runner_cpu_s, first_instruction_s, rank_cpu_s, cgroup_cpu_s)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_cgroup_cpu_s(cgroup: sandbox.RankCgroup) -> float | None:
    """The CPU a rank's cgroup has accounted, its exited processes included; None if it keeps none."""
    try:
        if cgroup.version == "v2":
            stat = dict(line.split() for line in (cgroup.dirs[""] / "cpu.stat").read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
        return int((cgroup.dirs["cpu"] / "cpuacct.usage").read_text()) / 1e9
    except (OSError, KeyError, ValueError):
        return None


def ray_costs(runs: int, skipped: str | None) -> dict[str, Any]:
    """start() -> Started and start() -> the job's first instruction on a local Ray cluster, jobs
    alternately sandboxed and not (all unsandboxed where the node cannot sandbox)."""
    to_started: dict[bool, list[float]] = {True: [], False: []}
    to_first: dict[bool, list[float]] = {True: [], False: []}
    with (
        tempfile.TemporaryDirectory(prefix="neocloud-bench-sandbox-ray-") as tmp,
        LocalCluster(dict.fromkeys(NODES, 8)) as cluster,
    ):
        ex = RayExecutor(address=cluster.address, log_dir=tmp)
        try:
            if not skipped:
                _until(lambda: len(nodes := ex.nodes()) == len(NODES) and all(n.sandboxed for n in nodes.values()))
            for i in range(runs):
                boxed = not skipped and i % 2 == 0
                job_id = f"bench-sandbox-{i}"
                node = NODES[i // 2 % len(NODES)]  # each kind on both nodes
                job = ExecJob(job_id, command=stamped(600.0), grace_s=0.0, tenant=TENANT if boxed else None)
                t0 = time.time()
                ex.start(job, [(node, [f"GPU-{node}-0"])])
                started = _wait(ex, _started_or_exited(job_id), TIMEOUT_S)
                to_started[boxed].append(time.time() - t0)
                if not isinstance(started, Started):  # it could not start: say why rather than time out
                    raise RuntimeError(f"job {job_id} did not start: {started}: {ex.read_log(job_id, 0)[0]!r}")
                if boxed and "uid" not in json.loads(started.sandbox or "{}"):  # never time an unsandboxed rank
                    raise RuntimeError(f"job {job_id} was to run sandboxed, but its rank says {started.sandbox!r}")
                to_first[boxed].append(_stamp(Path(tmp) / job_id / FIRST_INSTRUCTION) - t0)
                ex.cancel(job_id, 0.0)
                _wait(ex, _is(Exited, job_id), TIMEOUT_S)
                ex.release(job_id)
                _wait(ex, _is(Released, job_id), TIMEOUT_S)
        finally:
            ex.shutdown()
    return {
        "to_started": _compare(to_started[True], to_started[False], skipped),
        "to_first_instruction": _compare(to_first[True], to_first[False], skipped),
    }


def _started_or_exited(job_id: str) -> Callable[[ExecutorEvent], bool]:
    return lambda e: isinstance(e, Started | Exited) and e.job_id == job_id


def _until(ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the local Ray nodes did not report they can sandbox within {TIMEOUT_S}s")
        time.sleep(POLL_S)


def _stamp(path: Path) -> float:
    """The time the job wrote as its first instruction (the line is complete once it ends in a newline)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text()
            if text.endswith("\n"):
                return float(text)
        time.sleep(POLL_S)
    raise TimeoutError(f"the job did not write {path} within {TIMEOUT_S}s")


def _compare(boxed: list[float], plain: list[float], skipped: str | None = None) -> dict[str, Any]:
    """Medians and all values of each kind, and the sandbox's extra (median against median)."""
    out: dict[str, Any] = {"unsandboxed_s": _round(statistics.median(plain)), "unsandboxed_all_s": _round_all(plain)}
    if skipped:
        return {"skipped": skipped, **out}
    sandboxed = statistics.median(boxed)
    return {
        "sandboxed_s": _round(sandboxed),
        **out,
        "extra_s": _round(sandboxed - statistics.median(plain)),
        "sandboxed_all_s": _round_all(boxed),
    }


def _round(seconds: float) -> float:
    return round(seconds, 4)


def _round_all(seconds: list[float]) -> list[float]:
    return [_round(s) for s in seconds]
