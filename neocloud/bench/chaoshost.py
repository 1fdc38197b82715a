"""An agent host of `neocloud bench chaos`: one process running many real agents
(`neocloud.agent.main.Agent`, each with its own node id, SQLite spool and
simulated GPUs) as threads, streaming through the chaos proxy.

Ground truth is kept beside the spools: every batch the sampler seals is written
to the host's truth log (one JSON line) *before* the spool commits it, so a
`kill -9` leaves at most an intent the restart overwrites with the same seq.
The simulated counters continue across a restart from the last sealed reading,
as a GPU's counter runs on while its agent is dead.

It prints "started" once its agents run. On SIGTERM the host stops sampling, waits until every spool is acknowledged
(bounded), and prints one JSON object per node on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from neocloud.agent.gpu import SimBackend
from neocloud.agent.main import Agent, AgentConfig
from neocloud.agent.spool import Spool
from neocloud.domain.gpu import GpuInfo, Reading
from neocloud.v1 import telemetry_pb2 as pb
from neocloud.wire import tls

logger = logging.getLogger(__name__)

LOAD_CHANGE_S = 5.0  # how often each node's load changes, so utilisation sums tell samples apart
DRAIN_S = 120.0


def node_id(index: int) -> str:
    return f"chaos-{index:03d}"


def truth_path(work: Path, host: int) -> Path:
    return work / f"truth-{host}.jsonl"


def read_truth(path: Path) -> dict[tuple[str, int, int], dict[str, list[Any]]]:
    """(node, epoch, seq) -> {uuid: [samples, utilisation sum, [energy readings]]}; a later
    line for the same seq replaces an earlier one (an intent a kill -9 left behind)."""
    out: dict[tuple[str, int, int], dict[str, list[Any]]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # the half line a kill -9 can leave; its batch never reached the spool
        out[(rec["n"], rec["e"], rec["s"])] = rec["g"]
    return out


class _ContinuedSim:
    """A SimBackend whose energy counters go on from given values (the last sealed ones)."""

    name = "sim"

    def __init__(self, sim: SimBackend, offsets_mj: dict[str, int]) -> None:
        self.sim = sim
        self._offsets = offsets_mj

    def inventory(self) -> list[GpuInfo]:
        return self.sim.inventory()

    def read(self, read_energy: bool) -> Reading:
        reading = self.sim.read(read_energy)
        if not reading.energy:
            return reading
        energy = [replace(e, energy_mj=e.energy_mj + self._offsets.get(e.uuid, 0)) for e in reading.energy]
        return replace(reading, energy=energy)

    def now_us(self) -> int:
        return self.sim.now_us()

    def close(self) -> None:
        self.sim.close()


class TruthSpool:
    """Stands in for the sampler's spool: logs what each batch holds, then appends it."""

    def __init__(self, spool: Spool, log: TruthLog) -> None:
        self._spool = spool
        self._log = log

    def append(self, batch: pb.Batch) -> int:
        seq = self._spool.last_seq + 1
        gpus = {
            s.uuid: [len(s.timestamp_us), sum(s.gpu_util_percent), [e.energy_mj for e in s.energy]] for s in batch.gpus
        }
        self._log.write({"n": batch.node_id, "e": self._spool.epoch, "s": seq, "g": gpus})
        got = self._spool.append(batch)
        if got != seq:
            raise RuntimeError(f"spool gave seq {got}, the truth log has {seq}")
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spool, name)


class TruthLog:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        # One write() per line into the page cache: a killed process cannot lose it.
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)


def _offsets(
    truth: dict[tuple[str, int, int], dict[str, list[Any]]], spools: dict[str, tuple[int, int]]
) -> dict[str, int]:
    """Each GPU's last sealed energy reading (what its counter showed last); `spools`: node ->
    (epoch, last seq) of its spool, the batches that count."""
    last: dict[str, int] = {}
    for (node, epoch, seq), gpus in sorted(truth.items()):
        if spools.get(node, (0, 0))[0] == epoch and seq <= spools[node][1]:
            for uuid, (_, _, energy) in gpus.items():
                if energy:
                    last[uuid] = energy[-1]
    return last


def start_agents(args: argparse.Namespace) -> list[Agent]:
    work = Path(args.work)
    truth = read_truth(truth_path(work, args.host))
    log = TruthLog(truth_path(work, args.host))
    nodes = [node_id(index) for index in range(args.first, args.first + args.count)]
    spools = {}
    for node in nodes:
        probe = Spool(work / "spools" / f"{node}.db")  # its epoch and last seq say which sealed readings count
        spools[node] = (probe.epoch, probe.last_seq)
        probe.close()
    offsets = _offsets(truth, spools)
    agents = []
    for node in nodes:
        spool_path = work / "spools" / f"{node}.db"
        sim = SimBackend(node, args.gpus, load=0.5, energy_offset_mj=0)
        mtls: dict[str, Any] = {"insecure": True}
        if args.pki:
            cert, key = tls.node_paths(args.pki, node)
            mtls = {"ca_file": str(tls.ca_paths(args.pki)[0]), "cert_file": str(cert), "key_file": str(key)}
        config = AgentConfig(
            node_id=node,
            scheduler=f"127.0.0.1:{args.port}",
            backend="sim",
            tick_s=args.tick,
            energy_interval_s=args.tick * 2,
            batch_ticks=2,
            spool_path=str(spool_path),
            metrics_port=None,
            backoff_max_s=args.backoff_max,
            **mtls,
        )
        agent = Agent(config, backend=_ContinuedSim(sim, offsets))
        # The sampler seals through the truth log (duck-typed: it only appends and reads stats).
        agent.sampler.spool = TruthSpool(agent.spool, log)  # type: ignore[assignment]
        agents.append(agent)
    for agent in agents:
        agent.start()
    return agents


def drain(agents: list[Agent]) -> dict[str, dict[str, int]]:
    """Stop sampling, give every spool up to DRAIN_S to be acknowledged, stop."""
    for agent in agents:
        agent.sampler.stop()
    deadline = time.monotonic() + DRAIN_S
    sealed: list[int] = []
    # Done when every spool is empty and none grew for a second: a stopped sampler seals its
    # last batch at once. Agent.stop's own drain is not enough: it gives up while a stream reconnects.
    while time.monotonic() < deadline:
        now = [a.spool.last_seq for a in agents]
        if now == sealed and not any(a.spool.stats().batches for a in agents):
            break
        sealed = now
        time.sleep(1.0)
    report = {}
    for agent in agents:
        agent.stop()
        stats = agent.spool.stats()
        report[agent.config.node_id] = {
            "epoch": agent.spool.epoch,
            "last_seq": agent.spool.last_seq,
            "unacked_batches": stats.batches,
            "rejected_batches": stats.rejected_batches_total,
            "dropped_samples": stats.dropped_samples_total,
        }
    return report


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m neocloud.bench.chaoshost")
    for name in ("--host", "--port", "--first", "--count", "--gpus", "--seed"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--pki")
    p.add_argument("--tick", type=float, default=1.0)
    p.add_argument("--backoff-max", type=float, default=5.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agents = start_agents(args)
    print("started", flush=True)  # the orchestrator waits for it: a SIGTERM before the handler would kill us
    rng = random.Random(f"{args.seed}/{args.host}/{time.time_ns()}")
    while not stop.wait(LOAD_CHANGE_S * rng.uniform(0.5, 1.5)):
        for agent in agents:
            backend = agent.backend
            assert isinstance(backend, _ContinuedSim)
            backend.sim.set_load(rng.choice((None, round(rng.uniform(0.0, 1.0), 2))))
    print(json.dumps(drain(agents)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
