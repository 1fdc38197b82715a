"""A whole neocloud site on this machine, from production parts: certificates
for mTLS, an embedded multi-node Ray cluster (one worker per GPU node, labelled
`neocloud.io/node-id`), the scheduler with its SQLite store running jobs on
that cluster, and one agent per node as a child process streaming simulated
GPUs over mTLS on loopback. The sim GPUs follow the jobs Ray runs on their
node (`--sim-follow-jobs`), so power and energy reflect the schedule.

stop() tears it down in an order that loses nothing and leaves nothing running:
agents (they drain their last batches), scheduler, Ray driver, Ray cluster.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from neocloud.client import Client
from neocloud.scheduler.artifacts import read_bytes, root_beside
from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig
from neocloud.wire import tls
from neocloud.wire.netaddr import free_loopback_port

if TYPE_CHECKING:
    from neocloud.scheduler.executor import LocalCluster, RayExecutor

logger = logging.getLogger(__name__)

GPUS_PER_NODE = 8
CONSOLE = "demo-console"  # the API client's certificate (the mTLS port asks every client for one)
READY_TIMEOUT_S = 120.0  # Ray's start is slow on a busy 2-core machine
AGENT_STOP_S = 10.0
# Runs an agent so that it gets SIGTERM when the demo dies, however it dies (PR_SET_PDEATHSIG),
# and never starts if the demo is already gone. argv[1] is the demo's pid, the rest the CLI.
_AGENT_SHIM = (
    "import ctypes,os,sys\n"
    "ctypes.CDLL(None).prctl(1,15)\n"
    "if os.getppid()!=int(sys.argv[1]):sys.exit(0)\n"
    "from neocloud.cli import main\n"
    "main(sys.argv[2:])\n"
)


class Site:
    def __init__(self, work: Path, nodes: int, controller_interval_s: float = 0.5) -> None:
        self.work = work
        self.node_ids = [f"demo-node-{i + 1}" for i in range(nodes)]
        self.controller_interval_s = controller_interval_s
        self.cluster: LocalCluster | None = None
        self.executor: RayExecutor | None = None
        self.sched: BackgroundScheduler | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.agent_metrics: dict[str, str] = {}

    @property
    def scheduler(self) -> BackgroundScheduler:
        assert self.sched is not None, "the site has not started"
        return self.sched

    @property
    def fleet_gpus(self) -> int:
        return GPUS_PER_NODE * len(self.node_ids)

    @property
    def address(self) -> str:
        return f"localhost:{self.scheduler.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.scheduler.scheduler.metrics_port}/metrics"

    def client_tls(self) -> tuple[Path, Path, Path]:
        """(CA, certificate, key) for an API client."""
        return self.work / "ca.pem", self.work / f"node-{CONSOLE}.pem", self.work / f"node-{CONSOLE}-key.pem"

    def upload_workdir(self, token: str, directory: Path) -> str:
        """Pack and upload `directory` as the tenant with `token` would (`submit --workdir`); its digest."""
        ca, cert, key = self.client_tls()
        with Client(server=self.address, token=token, ca=ca, cert=cert, key=key) as client:
            return str(client.upload_workdir(directory).digest)

    def operator_token(self) -> str:
        token_file = self.scheduler.scheduler.bootstrap_token_file
        assert token_file is not None, "a fresh store writes an operator token"
        return token_file.read_text().strip()

    def start(self) -> None:
        # Ray only where jobs run (as in `neocloud scheduler`): importing it costs seconds.
        from neocloud.scheduler.executor import LocalCluster, RayExecutor, node_capabilities

        # A laptop demo: where this host cannot sandbox tenant ranks, they run unsandboxed, and say so.
        caps = node_capabilities()
        allow = not caps.full
        if allow:
            logger.warning("this host cannot sandbox tenant jobs (%s): the demo runs them unsandboxed", caps.missing)
        work = self.work
        tls.write_ca(work)
        tls.write_server(work, ["localhost", "127.0.0.1"])
        for node_id in (*self.node_ids, CONSOLE):
            tls.write_node(work, node_id)
        cluster = LocalCluster(dict.fromkeys(self.node_ids, GPUS_PER_NODE))
        self.cluster = cluster
        db_path = str(work / "scheduler.db")
        executor = RayExecutor(
            address=cluster.address,
            log_dir=work / "job-logs",
            read_workdir=functools.partial(read_bytes, root_beside(db_path)),  # what `submit --workdir` uploads
            log_to_driver=False,
            logging_level=logging.WARNING,
            allow_unsandboxed_tenants=allow,
        )
        self.executor = executor
        self.sched = BackgroundScheduler(
            SchedulerConfig(
                listen="127.0.0.1:0",
                db_path=db_path,
                metrics_host="127.0.0.1",
                metrics_port=0,
                ca_file=str(work / "ca.pem"),
                cert_file=str(work / "scheduler.pem"),
                key_file=str(work / "scheduler-key.pem"),
                controller_interval_s=self.controller_interval_s,
                meter_interval_s=2.0,  # the live revenue follows the ledger
                init=True,  # a new site in the work directory
                allow_unsandboxed_tenants=allow,
            ),
            executor,
        )
        for node_id in self.node_ids:
            self._start_agent(node_id)
        self._wait_ready(executor)

    def _start_agent(self, node_id: str) -> None:
        work, port = self.work, free_loopback_port()  # the agent does not report the port it picks
        cli = [
            "--log-level", "WARNING", "agent", "--node-id", node_id, "--backend", "sim", "--sim-follow-jobs",
            "--scheduler", self.address, "--ca", str(work / "ca.pem"), "--cert", str(work / f"node-{node_id}.pem"),
            "--key", str(work / f"node-{node_id}-key.pem"), "--spool", str(work / f"spool-{node_id}.db"),
            "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
            # A batch a second (not every 10): freed GPUs are placeable again once NVML shows them empty.
            "--tick", "1", "--batch-ticks", "1", "--energy-interval", "5", "--drain", "2",
        ]  # fmt: skip
        # Its own session: a Ctrl-C at the terminal reaches the demo, which stops the agents in order.
        self.agents[node_id] = subprocess.Popen(
            [sys.executable, "-c", _AGENT_SHIM, str(os.getpid()), *cli], start_new_session=True
        )
        self.agent_metrics[node_id] = f"http://127.0.0.1:{port}/metrics"

    def _wait_ready(self, executor: RayExecutor) -> None:
        """Every agent reported its GPUs and every Ray node is up."""
        fleet = self.scheduler.scheduler.telemetry.fleet
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            reported = {n for n in list(fleet.nodes) if fleet.nodes[n].gpus}
            alive = {n for n, info in executor.nodes().items() if info.alive}
            if reported >= set(self.node_ids) and alive >= set(self.node_ids):
                return
            dead = [n for n, p in self.agents.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"agents {dead} exited at start (see the messages above)")
            if time.monotonic() > deadline:
                missing = sorted(set(self.node_ids) - (reported & alive))
                raise RuntimeError(f"nodes {missing} not ready after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)

    def stop_agents(self) -> None:
        for proc in self.agents.values():
            if proc.poll() is None:
                proc.terminate()
        for node_id, proc in self.agents.items():
            try:
                proc.wait(timeout=AGENT_STOP_S)
            except subprocess.TimeoutExpired:
                logger.warning("agent %s did not stop in %.0f s; killing it", node_id, AGENT_STOP_S)
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Idempotent; each part is stopped even if another one fails."""
        steps = [
            ("agents", self.stop_agents),
            ("scheduler", self.sched.stop if self.sched is not None else None),
            ("Ray driver", self.executor.shutdown if self.executor is not None else None),
            ("Ray cluster", self.cluster.shutdown if self.cluster is not None else None),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception:  # keep tearing down the rest
                logger.exception("stopping the %s failed", what)
        self.sched = self.executor = self.cluster = None
