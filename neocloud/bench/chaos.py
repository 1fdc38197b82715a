"""`neocloud bench chaos`: a soak of the exactly-once telemetry pipeline under faults.

A real scheduler process (mTLS, `--ray-address none`) on a fresh SQLite store;
agents in a few agent-host processes (neocloud/bench/chaoshost.py, 25 agents
each); a hostile node (neocloud/bench/hostile.py); everything through one fault
proxy (neocloud/bench/faultproxy.py). A schedule drawn from the seed cuts, resets
and blackholes connections and `kill -9`s agent hosts and the scheduler, each
restarted on its spools or its store. At the end the faults stop, every spool
drains, the scheduler stops, and the hosts' ground truth is compared with the
store, GPU by GPU: samples (the metered utilisation count and sum) and energy.
"""

from __future__ import annotations

import json
import logging
import math
import random
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from neocloud.bench import chaoshost
from neocloud.bench.faultproxy import FaultProxy
from neocloud.bench.hostile import HostileNode
from neocloud.bench.verify import compare
from neocloud.wire import tls
from neocloud.wire.netaddr import free_loopback_port

logger = logging.getLogger(__name__)

AGENTS_PER_HOST = 25
FAULTS = ("cut", "reset", "blackhole", "agent_host_kill", "scheduler_kill")
PROGRESS_S = 10.0
STARTUP_S = 60.0


@dataclass(frozen=True)
class Settings:
    agents: int
    gpus: int
    seconds: float
    seed: int
    hostile: bool = True
    fault_every_s: float = 3.0
    tick_s: float = 1.0


class Soak:
    def __init__(self, settings: Settings, work: Path) -> None:
        self.agents, self.gpus, self.seed = settings.agents, settings.gpus, settings.seed
        self.seconds, self.fault_every_s, self.tick_s = settings.seconds, settings.fault_every_s, settings.tick_s
        self.hostile = settings.hostile
        self.work = work
        self.faults: Counter[str] = Counter()
        self.crashes: Counter[str] = Counter()  # processes that died without being killed
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._logs: list[IO[str]] = []
        self.rng = random.Random(self.seed)
        self.db = self.work / "scheduler.db"
        self.pki = self.work / "pki"
        self.port = free_loopback_port()
        self.hosts = math.ceil(self.agents / AGENTS_PER_HOST)
        self._blackholed: list[int] = []
        self.proxy = FaultProxy(self.port)  # it dials the scheduler per connection: it may come up later

    # --- processes ----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], stdout: int | None = None) -> None:
        log = open(self.work / f"{name}.log", "a")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(argv, stdout=stdout, stderr=log, text=True)

    def start_scheduler(self, first: bool) -> None:
        ca, (cert, key) = tls.ca_paths(self.pki)[0], tls.server_paths(self.pki)
        argv = [
            sys.executable, "-m", "neocloud", "--log-level", "WARNING", "scheduler",
            "--listen", f"127.0.0.1:{self.port}", "--db", str(self.db), "--ray-address", "none",
            "--metrics-host", "127.0.0.1", "--metrics-port", "0",
            "--ca", str(ca), "--cert", str(cert), "--key", str(key),
        ]  # fmt: skip
        if first:
            argv.append("--init")  # restarts go without: the store must be there
        self._spawn("scheduler", argv)
        _wait_listening(self.port, self._procs["scheduler"])

    def start_host(self, host: int) -> None:
        first = host * AGENTS_PER_HOST
        argv = [
            sys.executable, "-m", "neocloud.bench.chaoshost", "--host", str(host), "--port", str(self.proxy.port),
            "--first", str(first), "--count", str(min(AGENTS_PER_HOST, self.agents - first)),
            "--gpus", str(self.gpus), "--seed", str(self.seed), "--work", str(self.work), "--pki", str(self.pki),
            "--tick", str(self.tick_s),
        ]  # fmt: skip
        self._spawn(f"host-{host}", argv, stdout=subprocess.PIPE)
        proc = self._procs[f"host-{host}"]
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_S)
        if not ready or proc.stdout.readline().strip() != "started":
            raise RuntimeError(f"agent host {host} did not start; see {self.work}/host-{host}.log")

    def _kill(self, name: str) -> None:
        proc = self._procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    # --- the run -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        nodes = [chaoshost.node_id(i) for i in range(self.agents)]
        tls.write_ca(self.pki)
        tls.write_server(self.pki, ["127.0.0.1", "localhost"])
        for node in [*nodes, "chaos-hostile"]:
            tls.write_node(self.pki, node)
        hostile = None
        try:
            self.start_scheduler(first=True)
            for host in range(self.hosts):
                self.start_host(host)
            if self.hostile:
                # First come owns a GPU: the victim registers before the hostile node claims its GPU.
                _wait_registered(self.db, nodes[0])
                creds = tls.channel_credentials(tls.ca_paths(self.pki)[0], *tls.node_paths(self.pki, "chaos-hostile"))
                hostile = HostileNode(f"127.0.0.1:{self.proxy.port}", creds, nodes[0], self.seed)
                hostile.start()
            self._faults(t0)
            if hostile is not None:
                hostile.stop()
            drain0 = time.monotonic()
            reports = self._drain()
            drain_s = time.monotonic() - drain0
            self._procs["scheduler"].send_signal(signal.SIGTERM)  # its last commit
            self._procs["scheduler"].wait(timeout=60)
        finally:
            self.close()
        result = compare(self.db, [chaoshost.truth_path(self.work, h) for h in range(self.hosts)], reports)
        result.update(
            faults={f: self.faults[f] for f in FAULTS},
            crashes=dict(self.crashes),
            transport="mTLS",
            proxy_connections=self.proxy.connections,
            drain_s=round(drain_s, 1),
            wall_s=round(time.monotonic() - t0, 1),
        )
        if hostile is not None:
            result["hostile"] = {"outcomes": dict(sorted(hostile.outcomes.items())), "unexpected": hostile.unexpected}
        return result

    def _faults(self, t0: float) -> None:
        """Fault after fault until the time is up: every kind once in a seeded order, then at random."""
        order = list(FAULTS)
        self.rng.shuffle(order)
        next_progress = t0 + PROGRESS_S
        end = t0 + self.seconds
        while (now := time.monotonic()) < end:
            wait = min(self.rng.uniform(0.5, 1.5) * self.fault_every_s, end - now)
            time.sleep(max(0.0, min(wait, next_progress - now)))
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_S
                self._progress(t0)
                continue
            self._restart_crashed()
            if time.monotonic() >= end:
                break
            self._fault(order.pop(0) if order else self.rng.choice(FAULTS))
        self.proxy.reset(self._blackholed)  # the path comes back; the ends' state is gone
        self._blackholed = []
        self._restart_crashed()

    def _restart_crashed(self) -> None:
        """A process that died on its own is a finding (it fails the verdict); the soak goes on."""
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                continue
            self.crashes[name] += 1
            logger.error("%s exited on its own with %s; restarting it (see %s.log)", name, proc.returncode, name)
            if name == "scheduler":
                self.start_scheduler(first=False)
            else:
                self.start_host(int(name.removeprefix("host-")))

    def _fault(self, kind: str) -> None:
        self.faults[kind] += 1
        live = self.proxy.live()
        some = self.rng.sample(live, max(1, len(live) // self.rng.choice((1, 4, 10)))) if live else []
        what = f"{len(some)} of {len(live)} connections"
        if kind == "cut":
            self.proxy.cut(some)
        elif kind == "reset":
            self.proxy.reset(some)
        elif kind == "blackhole":
            # Those blackholed by the last one come back now (a firewall that forgot them: RST).
            self.proxy.reset(self._blackholed)
            self._blackholed = self.proxy.blackhole(some)
        elif kind == "agent_host_kill":
            host = self.rng.randrange(self.hosts)
            what = f"agent host {host}"
            self._kill(f"host-{host}")
            time.sleep(self.rng.uniform(0.2, 2.0))
            self.start_host(host)
        else:
            what = "the scheduler"
            self._kill("scheduler")
            time.sleep(self.rng.uniform(0.2, 2.0))
            self.start_scheduler(first=False)
        logger.info("fault: %s, %s", kind, what)

    def _progress(self, t0: float) -> None:
        print(
            json.dumps({"elapsed_s": round(time.monotonic() - t0), "faults": dict(self.faults),
                        "connections": self.proxy.connections, "live": len(self.proxy.live())}),
            file=sys.stderr, flush=True,
        )  # fmt: skip

    def _drain(self) -> dict[str, dict[str, int]]:
        """SIGTERM every host; each prints its nodes' spool positions once drained."""
        reports: dict[str, dict[str, int]] = {}
        for host in range(self.hosts):
            self._procs[f"host-{host}"].send_signal(signal.SIGTERM)
        for host in range(self.hosts):
            out, _ = self._procs[f"host-{host}"].communicate(timeout=chaoshost.DRAIN_S + 60)
            if not out.strip():
                raise RuntimeError(f"agent host {host} reported nothing; see {self.work}/host-{host}.log")
            reports.update(json.loads(out.strip().splitlines()[-1]))
        return reports

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.proxy.close()
        for log in self._logs:
            log.close()


def _wait_registered(db_path: Path, node: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                if db.execute("SELECT 1 FROM gpus WHERE node_id = ?", (node,)).fetchone():
                    return
            finally:
                db.close()
        except sqlite3.Error:
            pass  # not created yet, or busy
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {node} did not register within {timeout_s} s")
        time.sleep(0.2)


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout_s: float = STARTUP_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the scheduler exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run(settings: Settings, work_dir: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="neocloud-chaos-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = Soak(settings, work).run()
    s = settings
    return {"benchmark": "chaos", "agents": s.agents, "gpus_per_agent": s.gpus, "seconds": s.seconds, "seed": s.seed,
            **result}  # fmt: skip
