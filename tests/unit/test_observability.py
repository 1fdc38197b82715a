"""deploy/: the Prometheus rules and the Grafana dashboard query only what the code exports (or a
recording rule defines), every alert is actionable and unit-tested, and promtool accepts it all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, installed with ray
from prometheus_client.parser import text_string_to_metric_families

from neocloud.agent.gpu.sim import SimBackend
from neocloud.agent.main import Agent, AgentConfig
from neocloud.scheduler.server import BackgroundScheduler, SchedulerConfig
from tests.fakes.executor import FakeExecutor
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RECORDING = PROMETHEUS_DIR / "rules" / "neocloud-recording.yml"
ALERTS = PROMETHEUS_DIR / "rules" / "neocloud-alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests"
DASHBOARD = ROOT / "deploy" / "grafana" / "neocloud-fleet.json"

# Series Prometheus itself writes for every target; no collector of ours exports them.
PROMETHEUS_SERIES = {"up"}

# The sample names a family of each type stands for in the exposition (and so in Prometheus).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
    "stateset": ("",),
}

# PromQL words that look like metric names but are not.
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS |= {"inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for name, call in re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def exposition_names(text: str) -> set[str]:
    """Every series name a /metrics page can put in Prometheus, including families that have no
    samples yet (a counter's `_total`, a histogram's `_bucket`, `_count`, `_sum`, ...)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        base = family.name.removesuffix("_total") if family.type == "counter" else family.name
        names.update(base + suffix for suffix in _SUFFIXES[family.type])
    return names


def load_rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def dashboard_queries(node: object) -> Iterator[str]:
    """Every PromQL the dashboard runs: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and value.startswith("label_values("):
                inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", value)
                assert inner, f"unexpected variable query {value!r}"
                yield inner.group(1)
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def scrape(port: int | None) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The names the real collectors export: a scheduler and a simulated agent on loopback,
    streaming until every family has samples, scraped over HTTP."""
    tmp = tmp_path_factory.mktemp("observability")
    scheduler = BackgroundScheduler(
        SchedulerConfig(
            listen="127.0.0.1:0",
            db_path=str(tmp / "scheduler.db"),
            metrics_host="127.0.0.1",
            metrics_port=0,
            insecure=True,
            commit_interval_s=0.05,
            init=True,
        ),
        FakeExecutor(("node-1",)),  # a controller, so its families are exported too
    )
    agent: Agent | None = None
    try:
        running = Agent(
            AgentConfig(
                node_id="node-1",
                scheduler=f"127.0.0.1:{scheduler.port}",
                backend="sim",
                tick_s=0.05,
                energy_interval_s=0.2,
                batch_ticks=1,
                spool_path=str(tmp / "spool.db"),
                metrics_host="127.0.0.1",
                metrics_port=0,
                insecure=True,
                backoff_max_s=0.5,
            ),
            backend=SimBackend("node-1", 2, load=0.5),
        )
        agent = running
        running.start()
        fleet = scheduler.scheduler.telemetry.fleet
        wait_until(
            lambda: (
                "node-1" in fleet.nodes
                and fleet.nodes["node-1"].clock_offset_s is not None
                and all(g.energy.total_mj > 0 for g in fleet.nodes["node-1"].gpus.values())
                and len(running.sampler.latest.energy) == 2
            ),
            what="telemetry at the scheduler",
        )
        return exposition_names(scrape(running.metrics_port)) | exposition_names(
            scrape(scheduler.scheduler.metrics_port)
        )
    finally:
        if agent is not None:
            agent.stop()
        scheduler.stop()


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (node, gpu) (increase(neocloud_a_total{node=~"$node", x="by (y)"}[$__rate_interval])) / 3.6e6'
        " or on (node) group_left (model) rate(b:c:rate5m[5m] offset 15m) > bool 1"
        " unless count(up{job='a or b'} == 0) or vector(0) and time() - neocloud_c_seconds"
    )
    assert metric_names(expr) == {"neocloud_a_total", "b:c:rate5m", "up", "neocloud_c_seconds"}


def test_exposition_names_cover_families_without_samples() -> None:
    text = (
        "# HELP a_total A.\n# TYPE a_total counter\n"
        "# HELP b B.\n# TYPE b histogram\n"
        '# HELP c C.\n# TYPE c gauge\nc{x="1"} 2.0\n'
    )
    assert {"a_total", "b_bucket", "b_count", "b_sum", "c"} <= exposition_names(text)


def test_collectors_export_the_documented_families(exported: set[str]) -> None:
    # A guard that the fixture scraped both processes, and scraped them with data in them.
    for name in (
        "neocloud_gpu_power_watts",
        "neocloud_gpu_energy_joules_total",
        "neocloud_agent_last_ack_timestamp_seconds",
        "neocloud_fleet_gpu_energy_joules_total",
        "neocloud_node_clock_offset_seconds",
        "neocloud_ingest_batches_total",
        "neocloud_ingest_streams_refused_total",
    ):
        assert name in exported


def test_rules_and_dashboard_use_only_exported_or_recorded_metrics(exported: set[str]) -> None:
    recorded = {rule["record"] for rule in load_rules(RECORDING)}
    known = exported | recorded | PROMETHEUS_SERIES
    sources = [(f"{RECORDING.name}: {r['record']}", r["expr"]) for r in load_rules(RECORDING)]
    sources += [(f"{ALERTS.name}: {r['alert']}", r["expr"]) for r in load_rules(ALERTS)]
    sources += [(f"{DASHBOARD.name}", q) for q in dashboard_queries(json.loads(DASHBOARD.read_text()))]
    assert len(sources) > 40
    unknown = {(where, name) for where, expr in sources for name in metric_names(expr) - known}
    assert not unknown, f"metrics neither exported nor recorded: {sorted(unknown)}"


def test_recording_rules_follow_the_naming_convention() -> None:
    for rule in load_rules(RECORDING):
        level, metric, operations = rule["record"].split(":")
        assert re.fullmatch(r"[a-z_]*", level) and re.fullmatch(r"neocloud_[a-z_]+", metric), rule["record"]
        assert operations in {"sum", "avg", "rate5m"}, rule["record"]
        if operations.startswith("rate"):
            assert not metric.endswith("_total") and f"{metric}_total[" in rule["expr"], rule["record"]


def test_every_alert_is_actionable() -> None:
    alerts = load_rules(ALERTS)
    assert len({a["alert"] for a in alerts}) == len(alerts)
    for alert in alerts:
        assert re.fullmatch(r"Neocloud[A-Z][A-Za-z]+", alert["alert"]), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        annotations = alert["annotations"]
        assert 20 < len(annotations["summary"]) <= 100, alert["alert"]
        assert len(annotations["description"]) > 150, alert["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS.glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in load_rules(ALERTS)}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_every_recording_rule_is_unit_tested() -> None:
    tested = set()
    for path in RULE_TESTS.glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            tested.update(case["expr"] for case in test.get("promql_expr_test", []) if case.get("exp_samples"))
    assert {rule["record"] for rule in load_rules(RECORDING)} <= tested


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "node"}
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"] and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "--syntax-only", "prometheus.yml"],  # the token and CA files are the site's
        ["check", "rules", *(f"rules/{p.name}" for p in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")))],
        ["test", "rules", *(f"tests/{p.name}" for p in sorted(RULE_TESTS.glob("*.yml")))],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    result = subprocess.run(
        [str(PROMTOOL), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
