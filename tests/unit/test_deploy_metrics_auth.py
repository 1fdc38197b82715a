"""The shipped scrape configs protect the scheduler's /metrics the way the scheduler serves
it: HTTPS with its certificate and the bearer token it reads, in Kubernetes and in
deploy/prometheus/prometheus.yml; agents on 9402, not dcgm-exporter's 9400."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit.test_deploy_kubernetes import (
    AGENT,
    SCHED_CLAIMS,
    SCHED_POD,
    SCHEDULER,
    cli,
    mount_for,
    obj,
    ports,
)

PROMETHEUS_YML = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"


def test_the_service_monitor_scrapes_over_https_with_the_schedulers_token() -> None:
    args = cli(SCHEDULER)
    assert args.metrics_cert and args.metrics_key and args.metrics_token_file
    _, token_volume = mount_for(SCHEDULER, SCHED_POD, args.metrics_token_file, SCHED_CLAIMS)
    _, cert_volume = mount_for(SCHEDULER, SCHED_POD, args.metrics_cert, SCHED_CLAIMS)
    (endpoint,) = obj("ServiceMonitor", "neocloud-scheduler")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["authorization"]["type"] == "Bearer"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["name"] == token_volume["secret"]["secretName"]
    assert credentials["key"] in {item["key"] for item in token_volume["secret"]["items"]}
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == cert_volume["secret"]["secretName"]
    svc = obj("Service", "neocloud-scheduler")
    assert endpoint["tlsConfig"]["serverName"] == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    # The kubelet cannot send the token: liveness may not ask /metrics for an answer.
    assert "httpGet" not in SCHEDULER["livenessProbe"]


def test_prometheus_yml_scrapes_the_scheduler_over_https_with_a_token() -> None:
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]}
    scheduler = jobs["neocloud-scheduler"]
    assert scheduler["scheme"] == "https"
    assert scheduler["authorization"]["type"] == "Bearer" and scheduler["authorization"]["credentials_file"]
    assert scheduler["tls_config"]["ca_file"]


def test_agents_serve_metrics_beside_dcgm_exporter() -> None:
    assert cli(AGENT).metrics_port == ports(AGENT)["metrics"] == 9402
