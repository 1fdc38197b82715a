"""A real Prometheus scrapes a real scheduler and a simulated 8-GPU agent with deploy/'s rules
loaded, and its HTTP API answers with sane fleet numbers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.scheduler.server import BackgroundScheduler

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
PROMETHEUS = shutil.which("prometheus")
GPUS = 8

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus server is not installed (Debian: apt-get install prometheus)"
)


class Prometheus:
    """A prometheus process on loopback with its own config and storage."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.log = workdir / "prometheus.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = self.log.open("ab")
        for _ in range(3):  # a free port can be taken between finding it and binding it
            self.port = _free_port()
            self._process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
            )
            if self._poll(lambda: self._get("/-/ready") is not None, 15.0, "prometheus ready", fail_on_exit=False):
                return
            self.stop()
        self._log_file.close()
        raise AssertionError(f"prometheus did not start:\n{self.log_tail()}")

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                body = response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return json.loads(body) if path.startswith("/api/") else body

    def api(self, path: str, **params: str) -> Any:
        answer = self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert answer is not None and answer["status"] == "success", (path, params, answer)
        return answer["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait(self, predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
        self._poll(predicate, timeout_s, what, fail_on_exit=True)

    def _poll(self, predicate: Callable[[], bool], timeout_s: float, what: str, fail_on_exit: bool) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is None or self._process.poll() is not None:
                if fail_on_exit:
                    raise AssertionError(f"prometheus exited while waiting for {what}:\n{self.log_tail()}")
                return False
            if predicate():
                return True
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after 10 s); idempotent."""
        if self._process is None:
            self._log_file.close()
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, agent_port: int | None, scheduler_port: int | None) -> Path:
    # JSON is YAML: no dependency needed to write it. Job names as in deploy/prometheus/prometheus.yml.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted(RULES.glob("*.yml"))],
        "scrape_configs": [
            {"job_name": "neocloud-agent", "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]},
            {"job_name": "neocloud-scheduler", "static_configs": [{"targets": [f"127.0.0.1:{scheduler_port}"]}]},
        ],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[int | None, int | None], Prometheus]]:
    started: list[Prometheus] = []

    def start(agent_port: int | None, scheduler_port: int | None) -> Prometheus:
        config = write_config(tmp_path / "prometheus.yml", agent_port, scheduler_port)
        prometheus = Prometheus(config, tmp_path)
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


def test_prometheus_scrapes_the_fleet_and_evaluates_the_rules(
    scheduler_factory: Callable[..., BackgroundScheduler],
    agent_factory: Callable[..., Agent],
    prometheus_factory: Callable[[int | None, int | None], Prometheus],
) -> None:
    sched = scheduler_factory(metrics_port=0, metrics_host="127.0.0.1")
    agent = agent_factory(
        sched.port, backend=SimBackend("node-1", GPUS, load=0.5), metrics_port=0, metrics_host="127.0.0.1"
    )
    prom = prometheus_factory(agent.metrics_port, sched.scheduler.metrics_port)

    def targets_up() -> bool:
        active = prom.api("targets", state="active")["activeTargets"]
        return len(active) == 2 and all(t["health"] == "up" for t in active)

    prom.wait(targets_up, "both targets up")
    up = {labels["job"]: value for labels, value in prom.query("up")}
    assert up == {"neocloud-agent": 1.0, "neocloud-scheduler": 1.0}

    prom.wait(lambda: len(prom.query("neocloud_gpu_power_watts")) == GPUS, f"{GPUS} GPUs of power")
    power = prom.query("neocloud_gpu_power_watts")
    assert {labels["gpu"] for labels, _ in power} == {str(i) for i in range(GPUS)}
    assert all(labels["node"] == "node-1" and labels["job"] == "neocloud-agent" for labels, _ in power)
    assert all(50 < watts < 800 for _, watts in power), power

    def energy() -> list[tuple[dict[str, str], float]]:
        return prom.query("neocloud_fleet_gpu_energy_joules_total")

    prom.wait(lambda: len(energy()) == GPUS and all(j > 0 for _, j in energy()), "energy at the scheduler")
    first = sum(j for _, j in energy())
    prom.wait(lambda: sum(j for _, j in energy()) > first, "the fleet's energy to grow")

    # Recording rules, evaluated by the server on the scraped data.
    def recorded(expr: str) -> list[tuple[dict[str, str], float]]:
        return prom.query(expr)

    prom.wait(lambda: bool(recorded("node:neocloud_gpu_power_watts:sum")), "node:neocloud_gpu_power_watts:sum")
    [(labels, node_watts)] = recorded("node:neocloud_gpu_power_watts:sum")
    assert labels == {"__name__": "node:neocloud_gpu_power_watts:sum", "node": "node-1"}
    assert GPUS * 50 < node_watts < GPUS * 800
    # rate() over a window the series only partly covers reads low, so the 5-minute rule is only
    # checked for being there; the draw is checked over a short window the scrapes fill.
    prom.wait(lambda: bool(recorded(":neocloud_fleet_gpu_energy_joules:rate5m")), "the energy rate rule")
    assert recorded(":neocloud_fleet_gpu_energy_joules:rate5m")[0][1] > 0
    window = "neocloud_fleet_gpu_energy_joules_total[5s]"
    prom.wait(lambda: (prom.query(f"min(count_over_time({window}))") or [({}, 0.0)])[0][1] >= 4, "5 s of energy")
    [(_, fleet_watts)] = prom.query(f"sum(rate({window}))")
    assert GPUS * 50 < fleet_watts < GPUS * 800, "the energy must grow as fast as the GPUs draw"
    prom.wait(lambda: bool(recorded('result:neocloud_ingest_batches:rate5m{result="accepted"}')), "ingest rate")
    assert recorded('result:neocloud_ingest_batches:rate5m{result="accepted"}')[0][1] > 0

    # Every rule group loaded and evaluates without error, and a healthy fleet raises no alert.
    groups = prom.api("rules")["groups"]
    assert {g["name"] for g in groups} >= {"neocloud-fleet-power", "neocloud-agent", "neocloud-scheduler"}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] != "err", (rule["name"], rule.get("lastError"))
    assert prom.api("alerts")["alerts"] == []
