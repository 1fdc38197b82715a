"""deploy/ray/cluster.yaml: a config `ray up` accepts (Ray's own preparation and schema, as `ray up` runs
them), whose commands name files that exist, flags the real `neocloud` and `ray start` parsers accept, and
the same node id for a GPU node's Ray label, its agent and its certificate. No machines needed."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import start as ray_start

from neocloud.cli import build_parser
from neocloud.scheduler.executor.types import NODE_LABEL
from neocloud.wire import tls
from neocloud.wire.netaddr import split_host_port

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "ray" / "cluster.yaml"
SYSTEMD = ROOT / "deploy" / "systemd"
CONFIG: dict[str, Any] = yaml.safe_load(CLUSTER.read_text())
CHECKOUT = "~/neocloud"  # where file_mounts puts the repository on every host
HOSTNAME = "$(hostname)"  # the node id on a GPU node, as the shell expands it there
SEPARATORS = {";", "&&", "||", "|", "&"}
SECTIONS = (
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
SCHEDULER_DROP_IN = "/etc/systemd/system/neocloud-scheduler.service.d/ray.conf"
AGENT_DROP_IN = "/etc/systemd/system/neocloud-agent.service.d/scheduler.conf"


def commands(*sections: str) -> list[str]:
    return [cmd for section in sections for cmd in CONFIG.get(section, [])]


def simple_commands(cmd: str) -> list[list[str]]:
    """`cmd` split into its simple commands' words (no expansion: `$(hostname)` stays a word)."""
    lexer = shlex.shlex(cmd, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for word in lexer:
        if word in SEPARATORS:
            out.append([])
        else:
            out[-1].append(word)
    return [words for words in out if words]


def invocations(program: str, *sections: str) -> list[list[str]]:
    """Every run of `program` (by path or name, after any `sudo ...`) in those sections, argv[0] dropped."""
    found = []
    for cmd in commands(*sections):
        for words in simple_commands(cmd):
            at = next((i for i, w in enumerate(words) if w == program or w.endswith(f"/bin/{program}")), None)
            if at is not None:
                found.append(words[at + 1 :])
    return found


def ray_start_params(argv: list[str]) -> dict[str, Any]:
    assert argv[0] == "start", argv
    try:
        return dict(ray_start.make_context("ray start", argv[1:]).params)
    except click.UsageError as e:
        raise AssertionError(f"`ray start {' '.join(argv[1:])}`: {e}") from e


def parse(argv: list[str]) -> Any:
    """`neocloud ARGV...` parsed by the real CLI parser, or a failure that shows the command line."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:  # argparse printed why to stderr
        raise AssertionError(f"`neocloud {shlex.join(argv)}` does not parse (see stderr)") from e


def unit_exec_start(unit: str) -> list[str]:
    text = (SYSTEMD / unit).read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def drop_in(path: str) -> list[str]:
    """The lines a setup command writes to `path` with printf '%s\\n' ... | sudo tee `path`."""
    for cmd in commands("head_setup_commands", "worker_setup_commands"):
        for words in simple_commands(cmd):
            if words[:2] == ["printf", "%s\\n"] and f"tee {path} " in cmd + " ":
                return words[2:]
    raise AssertionError(f"no setup command writes {path}")


def scheduler_argv() -> list[str]:
    (execstart,) = [x for x in drop_in(SCHEDULER_DROP_IN) if x.startswith("ExecStart=") and x != "ExecStart="]
    return shlex.split(execstart.removeprefix("ExecStart="))


def test_ray_up_accepts_the_config() -> None:
    prepared = prepare_config(copy.deepcopy(CONFIG))  # what `ray up` does before it touches a host
    validate_config(prepared)
    provider = CONFIG["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and provider["worker_ips"]
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"]), "keep every GPU host"


def test_the_synced_checkout_leaves_out_the_virtualenv_and_git() -> None:
    assert CONFIG["file_mounts"] == {CHECKOUT: "."}, "ray up runs from the repository root (deploy/ray/README.md)"
    assert CONFIG["rsync_filter"] == [".gitignore"]
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".venv/" in ignored and "build/" in ignored
    assert "**/.git" in CONFIG["rsync_exclude"]


def test_files_the_commands_use_are_in_the_checkout() -> None:
    named = {m for cmd in commands(*SECTIONS) for m in re.findall(rf"{re.escape(CHECKOUT)}/(\S+)", cmd)}
    assert named, "the setup installs the systemd units from the synced checkout"
    for rel in named:
        assert (ROOT / rel).exists(), f"{CHECKOUT}/{rel} in cluster.yaml is not in the repository"
    for unit in ("neocloud-agent.service", "neocloud-scheduler.service"):
        assert f"{CHECKOUT}/deploy/systemd/{unit}" in " ".join(commands("setup_commands"))


def test_every_ray_start_parses_and_workers_carry_the_node_label() -> None:
    (head,) = [ray_start_params(a) for a in invocations("ray", "head_start_ray_commands") if a[0] == "start"]
    (worker,) = [ray_start_params(a) for a in invocations("ray", "worker_start_ray_commands") if a[0] == "start"]
    assert head["head"] and head["num_gpus"] == 0 and head["num_cpus"] == 0, "no jobs on the head"
    assert head["autoscaling_config"] == "~/ray_bootstrap_config.yaml", "the launcher's autoscaler sets up workers"
    assert worker["address"] == f"$RAY_HEAD_IP:{head['port']}"
    assert worker["labels"] == f"{NODE_LABEL}={HOSTNAME}", "the executor pins jobs by this label"


def test_ray_and_jobs_run_as_the_unprivileged_user_on_gpu_nodes() -> None:
    for cmd in commands("worker_start_ray_commands"):
        for words in simple_commands(cmd):
            if any(w.endswith("/bin/ray") for w in words):
                assert words[:4] == ["sudo", "-u", "neocloud-jobs", "-H"], words
    mkdir = [w for w in commands("worker_setup_commands") if "/var/lib/neocloud/job-logs" in w]
    assert mkdir == ["sudo install -d -o neocloud-jobs -g neocloud-jobs -m 0750 /var/lib/neocloud/job-logs"]


def test_the_scheduler_on_the_head_uses_this_cluster_and_its_files() -> None:
    args = parse(scheduler_argv()[1:])
    (head,) = [ray_start_params(a) for a in invocations("ray", "head_start_ray_commands") if a[0] == "start"]
    assert args.command == "scheduler"
    assert args.ray_address == f"ray://127.0.0.1:{head['ray_client_server_port']}"
    # Everything else as the shipped unit has it.
    shipped = parse(unit_exec_start("neocloud-scheduler.service")[1:])
    assert {k: v for k, v in vars(args).items() if k != "ray_address"} == {
        k: v for k, v in vars(shipped).items() if k != "ray_address"
    }
    checked = re.search(r"for f in ([^;]+); do", " ".join(commands("head_setup_commands")))
    assert checked and set(checked.group(1).split()) == {Path(p).name for p in (args.ca, args.cert, args.key)}
    # Runners on the GPU nodes write the job directory the scheduler derives from --db.
    assert str(Path(args.db).with_name("job-logs")) == "/var/lib/neocloud/job-logs"


def test_the_agent_on_each_gpu_node_reports_under_its_ray_label_and_certificate() -> None:
    argv = unit_exec_start("neocloud-agent.service")
    environment = {x.split("=", 2)[1]: x.split("=", 2)[2] for x in drop_in(AGENT_DROP_IN) if x.startswith("Env")}
    host, port = split_host_port(environment["SCHEDULER"])
    assert host == "$RAY_HEAD_IP"
    assert port == split_host_port(parse(scheduler_argv()[1:]).listen)[1]
    # systemd's %H and the shell's $(hostname) are both the kernel's hostname.
    expanded = [a.replace("%H", "gpu-node-001").replace("${SCHEDULER}", environment["SCHEDULER"]) for a in argv[1:]]
    args = parse(expanded)
    assert args.node_id == "gpu-node-001" and args.scheduler == environment["SCHEDULER"]
    cert, key = tls.node_paths(Path(args.cert).parent, args.node_id)
    assert (args.cert, args.key) == (str(cert), str(key)) and Path(args.ca).name == tls.CA_CERT
    checked = re.search(r"for f in ([^;]+); do", " ".join(commands("worker_setup_commands")))
    assert checked
    names = {n.replace(HOSTNAME, "gpu-node-001") for n in checked.group(1).split()}
    assert names == {Path(p).name for p in (args.ca, args.cert, args.key)}


@pytest.mark.parametrize("unit", ["neocloud-agent", "neocloud-scheduler"])
def test_units_are_installed_before_they_are_started(unit: str) -> None:
    sections = ("worker_setup_commands",) if unit == "neocloud-agent" else ("head_start_ray_commands",)
    started = [w for cmd in commands(*sections) for w in simple_commands(cmd) if w[:2] == ["sudo", "systemctl"]]
    assert ["sudo", "systemctl", "enable", unit] in started and ["sudo", "systemctl", "restart", unit] in started
    assert (SYSTEMD / f"{unit}.service").is_file()


def test_the_head_makes_the_store_the_unit_refuses_to_start_without() -> None:
    unit = parse(unit_exec_start("neocloud-scheduler.service")[1:])
    assert not (unit.init or unit.init_only), "the unit never creates a store"
    # `sudo -u neocloud /opt/neocloud/bin/neocloud scheduler ...` (and `install -o neocloud`) name the user too.
    runs = {
        shlex.join(a[a.index("scheduler") :])
        for a in invocations("neocloud", "head_setup_commands")
        if "scheduler" in a
    }
    (made,) = [parse(shlex.split(a)) for a in runs]
    assert made.init_only and made.db == unit.db == parse(scheduler_argv()[1:]).db
