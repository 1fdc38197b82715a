"""Every /metrics as the tools read it: `promtool check metrics` on a real agent and a real
scheduler with telemetry and billing data, and the scheduler's /metrics over HTTPS behind a
bearer token, scraped over real sockets."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.wire import tls
from tests.fakes.executor import FakeExecutor
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
TOKEN = "s3cret-scrape-token-0123456789"


def get(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_check_metrics_passes_on_every_endpoint(
    scheduler_factory: Callable[..., BackgroundScheduler], agent_factory: Callable[..., Agent]
) -> None:
    sched = scheduler_factory(
        metrics_port=0,
        metrics_host="127.0.0.1",
        executor=FakeExecutor(("node-1",)),
        rate_card_path=str(ROOT / "deploy" / "config" / "ratecard.example.yaml"),
    )
    agent = agent_factory(
        sched.port, backend=SimBackend("node-1", 2, load=0.5), metrics_port=0, metrics_host="127.0.0.1"
    )
    fleet = sched.scheduler.telemetry.fleet
    wait_until(
        lambda: "node-1" in fleet.nodes and all(g.energy.total_mj > 0 for g in fleet.nodes["node-1"].gpus.values()),
        what="energy at the scheduler",
    )
    assert sched.scheduler.metering is not None
    sched.call(sched.scheduler.telemetry.commit())
    sched.scheduler.metering.run_once()  # the ledger's figures, not only start-up zeros
    pages = {
        "agent": get(f"http://127.0.0.1:{agent.metrics_port}/metrics"),
        "scheduler": get(f"http://127.0.0.1:{sched.scheduler.metrics_port}/metrics"),
    }
    for name, (status, text) in pages.items():
        assert status == 200, name
        result = subprocess.run(
            [str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert families(text)["neocloud_build_info"] == "gauge", name
    scheduler_families = families(pages["scheduler"][1])
    for histogram in (
        "neocloud_ingest_commit_seconds",
        "neocloud_scheduler_step_seconds",
        "neocloud_ledger_pass_seconds",
    ):
        assert scheduler_families[histogram] == "histogram", histogram
    assert scheduler_families["neocloud_tenant_month_gpu_seconds"] == "gauge"
    assert 'neocloud_tenant_month_gpu_seconds{class="idle",tenant=""}' in pages["scheduler"][1]


def test_scheduler_metrics_over_https_need_the_token(
    scheduler_factory: Callable[..., BackgroundScheduler], tmp_path: Path
) -> None:
    tls.write_ca(tmp_path)
    tls.write_server(tmp_path, ["localhost", "127.0.0.1"])
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    sched = scheduler_factory(
        metrics_port=0,
        metrics_host="127.0.0.1",
        metrics_cert_file=str(tmp_path / "scheduler.pem"),
        metrics_key_file=str(tmp_path / "scheduler-key.pem"),
        metrics_token_file=str(token_file),
    )
    url = f"https://127.0.0.1:{sched.scheduler.metrics_port}/metrics"
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    # A client that connects and never starts its handshake holds up no one else's scrape.
    silent = socket.create_connection(("127.0.0.1", sched.scheduler.metrics_port))

    assert get(url, None, trusted)[0] == 401
    assert get(url, "not-the-token-at-all-0000", trusted)[0] == 401
    status, text = get(url, TOKEN, trusted)
    assert status == 200 and "neocloud_build_info" in text
    with pytest.raises(urllib.error.URLError):  # the CA is checked: an untrusting client refuses
        get(url, TOKEN, ssl.create_default_context())
    # Plain HTTP to the TLS port gets no metrics, and the server carries on.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        get(f"http://127.0.0.1:{sched.scheduler.metrics_port}/metrics", TOKEN)
    assert get(url, TOKEN, trusted)[0] == 200
    silent.close()
