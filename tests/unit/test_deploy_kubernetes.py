"""deploy/kubernetes/: every object is valid for the Kubernetes API (the official JSON schemas, offline,
through kubernetes-validate) or, for the operators' kinds, for a vendored schema of the fields we use;
and the manifests agree with each other and with the code: CLI flags, ports, selectors, Secrets, mounted
paths, the Ray node label, image and versions. No cluster needed."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray._private.label_utils import parse_node_labels_string
from ray.scripts.scripts import start as ray_start

from neocloud import __version__
from neocloud.cli import build_parser
from neocloud.scheduler.executor.types import NODE_LABEL
from neocloud.wire import tls
from neocloud.wire.netaddr import split_host_port

try:
    import kubernetes_validate
except ImportError as e:  # a dev dependency: fail, never skip, where it is missing
    raise ImportError(
        "tests/unit/test_deploy_kubernetes.py needs kubernetes-validate (the offline Kubernetes schemas); "
        "install the dev extras: pip install -e '.[dev]'"
    ) from e

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "kubernetes"
FIXTURES = ROOT / "tests" / "fixtures" / "kubernetes"
README = ROOT / "deploy" / "README.md"
ALERTS = ROOT / "deploy" / "prometheus" / "rules" / "neocloud-alerts.yml"
NAMESPACE = "neocloud"
IMAGE = f"ghcr.io/neocloud/neocloud:{__version__}"
# The oldest Kubernetes deploy/README.md promises and the newest the validator ships.
KUBERNETES_VERSIONS = ("1.28", "1.37")
CUSTOM_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster.ray.io-v1.schema.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com-v1.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.monitoring.coreos.com-v1.schema.json",
}
KUSTOMIZATION = "kustomization.yaml"


def _load() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != KUSTOMIZATION:
            docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


DOCS = _load()
BUILTIN = [(f, d) for f, d in DOCS if (d["apiVersion"], d["kind"]) not in CUSTOM_SCHEMAS]
CUSTOM = [(f, d) for f, d in DOCS if (d["apiVersion"], d["kind"]) in CUSTOM_SCHEMAS]


def _id(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['kind']}/{item[1]['metadata']['name']}"


def obj(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template in the manifests, named for messages."""
    for _, d in DOCS:
        if d["kind"] in ("DaemonSet", "StatefulSet", "Deployment"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]
        elif d["kind"] == "RayCluster":
            yield f"RayCluster/{d['metadata']['name']}/head", d["spec"]["headGroupSpec"]["template"]
            for group in d["spec"].get("workerGroupSpecs", []):
                yield f"RayCluster/{d['metadata']['name']}/{group['groupName']}", group["template"]


def container(template: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in template["spec"]["containers"] if c["name"] == name)


def ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def env_from_node_name(c: dict[str, Any], name: str) -> bool:
    """True if the container's env `name` is the pod's node name (downward API)."""
    refs = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
    return refs.get(name) == "spec.nodeName"


def selected(selector: dict[str, str]) -> list[str]:
    """The pod templates whose labels `selector` (matchLabels) selects."""
    return [w for w, t in pod_templates() if selector.items() <= t["metadata"]["labels"].items()]


def parse(argv: list[str]) -> Any:
    """`neocloud ARGV...` parsed by the real CLI parser, or a failure that shows the command line."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed why to stderr
        raise AssertionError(f"`neocloud {shlex.join(argv)}` does not parse (see stderr)") from e


def cli(c: dict[str, Any]) -> Any:
    """The container's `neocloud ...` command line, parsed by the real CLI parser."""
    assert c["command"] == ["neocloud"], c["command"]
    return parse(c["args"])


def volumes(template: dict[str, Any], claims: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """The pod's volumes by name; a StatefulSet's claim templates as {"claim": True}."""
    return {v["name"]: v for v in template["spec"].get("volumes", [])} | {n: {"name": n, "claim": True} for n in claims}


def mount_for(
    c: dict[str, Any], template: dict[str, Any], path: str, claims: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The volumeMount under which `path` lies, and its volume."""
    mounts = [m for m in c.get("volumeMounts", []) if Path(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume of container {c['name']}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return mount, volumes(template, claims)[mount["name"]]


AGENT_DS = obj("DaemonSet", "neocloud-agent")
AGENT_POD = AGENT_DS["spec"]["template"]
AGENT = container(AGENT_POD, "agent")
SCHED_STS = obj("StatefulSet", "neocloud-scheduler")
SCHED_POD = SCHED_STS["spec"]["template"]
SCHEDULER = container(SCHED_POD, "scheduler")
RAY = obj("RayCluster", "neocloud-ray")
RAY_HEAD_POD = RAY["spec"]["headGroupSpec"]["template"]
RAY_WORKER_GROUP = next(g for g in RAY["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
RAY_WORKER = container(RAY_WORKER_GROUP["template"], "ray-worker")
SCHED_CLAIMS = tuple(t["metadata"]["name"] for t in SCHED_STS["spec"]["volumeClaimTemplates"])


# --- schemas -------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / KUSTOMIZATION).read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {KUSTOMIZATION}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert not list(K8S_DIR.glob("*.yml")), "use .yaml: the kustomization and this test read *.yaml"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("item", BUILTIN, ids=_id)
def test_builtin_objects_match_the_kubernetes_schema(item: tuple[str, dict[str, Any]], version: str) -> None:
    _, doc = item
    try:
        kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields fail too
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(f"{e.message}; for a custom resource, vendor a schema in {FIXTURES} and add it to CUSTOM_SCHEMAS")
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{_id(item)} is not valid for Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")


@pytest.mark.parametrize("item", CUSTOM, ids=_id)
def test_custom_resources_match_their_vendored_schema(item: tuple[str, dict[str, Any]]) -> None:
    _, doc = item
    schema = json.loads((FIXTURES / CUSTOM_SCHEMAS[doc["apiVersion"], doc["kind"]]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_ray_pod_templates_are_valid_pods(version: str) -> None:
    for where, template in pod_templates():
        if where.startswith("RayCluster/"):
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **template.get("metadata", {})}}
            try:
                kubernetes_validate.validate({**pod, "spec": template["spec"]}, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{where} is not a valid Pod for Kubernetes {version}: {list(e.path)}: {e.message}")


def test_objects_live_in_the_namespace_and_carry_the_app_label() -> None:
    assert obj("Namespace", NAMESPACE)
    for _, d in DOCS:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, _id(("", d))
        assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "neocloud", _id(("", d))


def test_every_volume_mount_names_a_volume_of_its_pod() -> None:
    for where, template in pod_templates():
        claims = SCHED_CLAIMS if where == "StatefulSet/neocloud-scheduler" else ()
        for c in template["spec"]["containers"]:
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes(template, claims), f"{where}/{c['name']}: no volume {mount['name']}"


def test_images_and_versions_match_the_package() -> None:
    for where, template in pod_templates():
        for c in template["spec"]["containers"]:
            assert c["image"] == IMAGE, f"{where}/{c['name']}: {c['image']} (the image tag is the package version)"
    assert RAY["spec"]["rayVersion"] == ray.__version__


# --- the CLI, ports and services ------------------------------------------------------------------


@pytest.mark.parametrize("c", [AGENT, SCHEDULER], ids=lambda c: c["name"])
def test_containers_run_the_real_cli(c: dict[str, Any]) -> None:
    args = cli(c)  # argparse exits on an unknown flag or a bad value
    assert args.command == c["args"][0]
    defined = {e["name"] for e in c.get("env", [])}
    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c["args"])):
        assert ref in defined, f"$({ref}) in the arguments of {c['name']} is not in its env, so it is not expanded"


def test_listening_ports_are_the_declared_container_ports() -> None:
    agent, scheduler = cli(AGENT), cli(SCHEDULER)
    assert ports(AGENT) == {"metrics": agent.metrics_port}
    assert ports(SCHEDULER) == {"grpc": split_host_port(scheduler.listen)[1], "metrics": scheduler.metrics_port}


def test_services_select_one_workload_and_target_its_named_ports() -> None:
    for _, svc in DOCS:
        if svc["kind"] != "Service":
            continue
        matched = selected(svc["spec"]["selector"])
        assert len(matched) == 1, f"Service {svc['metadata']['name']} selects {matched}"
        where, template = next((w, t) for w, t in pod_templates() if w == matched[0])
        declared = {n for c in template["spec"]["containers"] for n in ports(c)}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in declared, f"{port['targetPort']} is no container port of {where}"
    assert SCHED_STS["spec"]["replicas"] == 1, "the store is SQLite: one scheduler"
    assert obj("Service", SCHED_STS["spec"]["serviceName"])


def alert_jobs() -> set[str]:
    return set(re.findall(r'job="([^"]+)"', ALERTS.read_text()))


def relabelled_job(endpoint: dict[str, Any]) -> str:
    return next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")


def test_service_monitor_scrapes_the_scheduler_service_under_the_alerts_job_name() -> None:
    monitor, svc = obj("ServiceMonitor", "neocloud-scheduler"), obj("Service", "neocloud-scheduler")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["port"] == "metrics"
    assert relabelled_job(endpoint) == "neocloud-scheduler" and "neocloud-scheduler" in alert_jobs()


def test_pod_monitor_scrapes_the_agents_and_nothing_else_under_the_alerts_job_name() -> None:
    monitor = obj("PodMonitor", "neocloud-agent")
    assert selected(monitor["spec"]["selector"]["matchLabels"]) == ["DaemonSet/neocloud-agent"]
    assert AGENT_DS["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports(AGENT)
    assert relabelled_job(endpoint) == "neocloud-agent" and "neocloud-agent" in alert_jobs()


def test_agents_dial_the_scheduler_service_by_a_name_in_its_certificate() -> None:
    host, port = split_host_port(cli(AGENT).scheduler)
    svc = obj("Service", "neocloud-scheduler")
    assert host == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert port == next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert re.search(rf"neocloud certs scheduler [^`]*--host {re.escape(host)}\b", README.read_text()), (
        f"deploy/README.md must issue the scheduler certificate with --host {host}"
    )


def test_the_scheduler_reaches_the_ray_head_through_ray_client() -> None:
    name, namespace = RAY["metadata"]["name"], RAY["metadata"]["namespace"]
    # KubeRay names the head Service <cluster>-head-svc; Ray Client listens on 10001.
    assert cli(SCHEDULER).ray_address == f"ray://{name}-head-svc.{namespace}.svc:10001"
    assert ports(container(RAY_HEAD_POD, "ray-head"))["client"] == 10001


# --- the agent ---------------------------------------------------------------------------------------


def test_the_agent_reads_every_gpu_of_every_gpu_node_without_taking_one() -> None:
    spec = AGENT_POD["spec"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["hostPID"] is True, "NVML reports host PIDs: the process audit needs the host's PID namespace"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    env = {e["name"]: e.get("value") for e in AGENT.get("env", [])}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    resources = AGENT["resources"]
    assert not any("nvidia.com/gpu" in resources.get(k, {}) for k in ("requests", "limits"))
    assert cli(AGENT).backend == "nvml"


@pytest.mark.parametrize("where", ["agent", "scheduler", "ray-head", "ray-worker"])
def test_containers_run_unprivileged(where: str) -> None:
    template, c = {
        "agent": (AGENT_POD, AGENT),
        "scheduler": (SCHED_POD, SCHEDULER),
        "ray-head": (RAY_HEAD_POD, container(RAY_HEAD_POD, "ray-head")),
        "ray-worker": (RAY_WORKER_GROUP["template"], RAY_WORKER),
    }[where]
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False, "nothing here talks to the Kubernetes API"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "add" not in c["securityContext"]["capabilities"]
    assert not c["securityContext"].get("privileged", False)
    if where in ("agent", "scheduler"):
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_agents_node_id_is_the_kubernetes_node_name_and_names_its_certificate() -> None:
    assert env_from_node_name(AGENT, "NEOCLOUD_NODE_ID")
    assert cli(AGENT).node_id == "$(NEOCLOUD_NODE_ID)"
    # As the kubelet expands it on node gpu-node-001:
    args = parse([a.replace("$(NEOCLOUD_NODE_ID)", "gpu-node-001") for a in AGENT["args"]])
    cert, key = tls.node_paths(Path(args.cert).parent, args.node_id)
    assert (args.cert, args.key) == (str(cert), str(key)), "the files `neocloud certs node` writes"
    assert Path(args.ca).name == tls.CA_CERT and Path(args.ca).parent == cert.parent


def test_the_agents_files_are_on_host_directories_that_outlive_the_pod() -> None:
    args = cli(AGENT)
    for path, writable in ((args.ca, False), (args.cert, False), (args.key, False), (args.spool, True)):
        mount, volume = mount_for(AGENT, AGENT_POD, path)
        assert volume["hostPath"]["type"] == "Directory", f"{path}: an unprovisioned node must fail visibly"
        assert mount.get("readOnly", False) is not writable, path
    assert Path(args.spool).is_relative_to("/var/lib/neocloud")
    _, spool = mount_for(AGENT, AGENT_POD, args.spool)
    assert spool["hostPath"]["path"] == "/var/lib/neocloud"


# --- the scheduler -------------------------------------------------------------------------------------


def test_the_scheduler_store_is_on_its_persistent_volume() -> None:
    mount, volume = mount_for(SCHEDULER, SCHED_POD, cli(SCHEDULER).db, SCHED_CLAIMS)
    assert volume.get("claim") and not mount.get("readOnly", False)


def test_the_scheduler_certificate_comes_from_the_secret_the_readme_creates() -> None:
    args = cli(SCHEDULER)
    files = {args.ca: tls.CA_CERT, args.cert: tls.SERVER_CERT, args.key: tls.SERVER_KEY}
    readme = README.read_text()
    for path, written_by_certs in files.items():
        mount, volume = mount_for(SCHEDULER, SCHED_POD, path, SCHED_CLAIMS)
        assert mount.get("readOnly") is True
        secret = volume["secret"]
        item = next(i for i in secret["items"] if i["path"] == str(Path(path).relative_to(mount["mountPath"])))
        assert item["key"] == written_by_certs, f"{path} must be {written_by_certs} from `neocloud certs`"
        command = f"create secret generic {secret['secretName']}"
        assert command in readme, f"deploy/README.md never says `kubectl {command}`"
        block = readme[readme.index(command) : readme.index("```", readme.index(command))]
        assert f"--from-file={item['key']}=" in block, f"the Secret's key {item['key']} is not made in deploy/README.md"


# --- Ray -------------------------------------------------------------------------------------------------


def test_ray_workers_label_their_ray_node_with_the_kubernetes_node_name() -> None:
    template = RAY_WORKER_GROUP["template"]
    assert template["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert RAY_WORKER["command"] == ["/bin/bash", "-c", "--"]
    (script,) = RAY_WORKER["args"]
    assert env_from_node_name(RAY_WORKER, "NEOCLOUD_NODE_ID")
    # The outer shell expands both variables; the inner one runs KubeRay's `ray start ... --block`.
    (inner,) = re.findall(r'exec /bin/bash -c "([^"]*)"', script)
    words = shlex.split(inner)
    assert words[0] == "$KUBERAY_GEN_RAY_START_CMD"
    label_flags = [w for w in words if w.startswith("--labels=")]
    assert label_flags == [f"--labels={NODE_LABEL}=$NEOCLOUD_NODE_ID"], "the executor's label, the agent's id"
    assert "--labels" in {opt for param in ray_start.params for opt in param.opts}
    assert parse_node_labels_string(label_flags[0].removeprefix("--labels=").replace("$NEOCLOUD_NODE_ID", "gpu-01"))
    for group in [RAY["spec"]["headGroupSpec"], *RAY["spec"]["workerGroupSpecs"]]:
        assert "labels" not in group.get("rayStartParams", {}), "KubeRay rejects rayStartParams.labels"


def test_ray_workers_take_all_eight_gpus_of_one_gpu_node() -> None:
    spec = RAY_WORKER_GROUP["template"]["spec"]
    resources = RAY_WORKER["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 8
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == AGENT_POD["spec"]["nodeSelector"], "wherever a worker runs, an agent reports"
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= RAY_WORKER_GROUP["template"]["metadata"]["labels"].items()
    assert RAY["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"


def test_the_job_directory_is_writable_on_ray_workers() -> None:
    # The scheduler hands runners Path(--db).with_name("job-logs") (scheduler/server.py).
    job_dir = str(Path(cli(SCHEDULER).db).with_name("job-logs"))
    mount, volume = mount_for(RAY_WORKER, RAY_WORKER_GROUP["template"], job_dir)
    assert mount["mountPath"] == job_dir and not mount.get("readOnly", False) and "emptyDir" in volume


# --- Prometheus rules under the Prometheus Operator ---------------------------------------------------------


@pytest.mark.parametrize("rules", sorted(ALERTS.parent.glob("*.yml")), ids=lambda p: p.name)
def test_rule_files_indent_into_a_prometheus_rule_as_the_readme_does(rules: Path) -> None:
    assert "sed 's/^/  /'" in README.read_text()
    text = rules.read_text()
    wrapped = "spec:\n" + "".join(f"  {line}" for line in text.splitlines(keepends=True))
    assert yaml.safe_load(wrapped)["spec"] == yaml.safe_load(text)


def test_the_store_is_made_by_an_init_container_on_the_claim_the_scheduler_uses() -> None:
    (init,) = SCHED_POD["spec"]["initContainers"]
    made, served = cli(init), cli(SCHEDULER)
    assert made.init_only and not (served.init or served.init_only), "only the init container creates the store"
    assert made.db == served.db
    assert mount_for(init, SCHED_POD, made.db, SCHED_CLAIMS) == mount_for(SCHEDULER, SCHED_POD, served.db, SCHED_CLAIMS)
    assert init["image"] == SCHEDULER["image"]
