"""Runs inside a `--ray` job's sandbox, as the tenant: one node of the job's private Ray.

Standard library only, and never imported: private_ray.py hands this file's source to the job's
Python with `-c` (the sandbox hides the neocloud package from tenant ranks), followed by one JSON
argument (the node's settings), "--" and the job's argv.

Rank 0 starts the head (`ray start --head` on the gang's master port), then runs the job's
command as the driver, as a child: a SIGTERM (the preemption notice) is passed to the driver
alone, so the private cluster serves it through its grace, and the rank exits with the driver's
status. Every other rank joins the head (retrying while it comes up) and serves as a worker node
until the head is gone; a SIGTERM while the head is up is left unanswered for the same reason (the
runner's SIGKILL at the deadline ends it all). The Ray daemons are this process's; the sandbox's PID namespace and the
rank's cgroup end them with the rank. The token comes in RAY_AUTH_TOKEN, never on a command line.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

JOIN_TIMEOUT_S = 300.0  # how long ranks wait for each other (each unpacks its workdir first, up to 1 GiB)
HEAD_GONE_AFTER = 3  # failed connections in a row (one a second) before a worker rank ends
AGENT_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
# Ray Client's default, 10001, is fixed: every head of a node (the site's, other tenants') would want it.
HEAD_PORTS = ("--ray-client-server-port",)


def free_port(ip: str) -> int:
    """A port free on this node now: Ray's fixed defaults would collide between two ranks of one
    host and with the site's own Ray."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def port_taken(port: int) -> bool:
    """Whether another process holds `port` on this node, as the head's GCS would bind it (all
    addresses, reusing a closed connection's port): the runner picked it free, but anyone may take it
    before the boot runs, and Ray then fails slowly and in a traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def start_args(node: dict[str, object]) -> list[str]:
    ip = str(node["node_ip"])
    args = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        f"--node-ip-address={ip}",
        f"--num-cpus={node['cpus']}",
        f"--num-gpus={node['gpus']}",
        f"--labels=neocloud.io/rank={node['rank']}",
        "--disable-usage-stats",
        "--plasma-directory=/tmp",  # the sandbox's private /tmp; it has no /dev/shm of its own
        f"--temp-dir={node['temp_dir']}",
    ]
    if node["object_store_bytes"]:
        args.append(f"--object-store-memory={node['object_store_bytes']}")
        args.append(f"--memory={node['memory_bytes']}")
    args += [f"{flag}={free_port(ip)}" for flag in AGENT_PORTS]
    if node["rank"] == 0:
        args += [f"{flag}={free_port(ip)}" for flag in HEAD_PORTS]
        return [*args, "--head", f"--port={node['port']}", "--include-dashboard=false"]
    return [*args, f"--address={node['head']}"]


def reachable(head: str) -> bool:
    ip, _, port = head.rpartition(":")
    try:
        socket.create_connection((ip, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def join_problem(world_size: int) -> str | None:
    """None once every rank's node is in the cluster (so the driver starts on all of them), else what
    went wrong."""
    import ray  # the job's Python has it; only the head's boot needs it

    try:
        ray.init(logging_level=30, log_to_driver=False)  # WARNING
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:  # the head died since it started
        return f"the private Ray head does not answer: {e}"
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while sum(1 for n in ray.nodes() if n["Alive"]) < world_size:
            if time.monotonic() > deadline:
                return "not every rank joined the private Ray in time"
            time.sleep(0.5)
        return None
    finally:
        ray.shutdown()


def run_head(node: dict[str, object], argv: list[str]) -> int:
    port = int(str(node["port"]))
    if port_taken(port):
        print(
            f"neocloud: the private Ray head's port {port} was taken on this node by another process; "
            "start the job again",
            file=sys.stderr,
            flush=True,
        )
        return 1
    if subprocess.run(start_args(node), stdin=subprocess.DEVNULL).returncode != 0:
        print("neocloud: the private Ray head did not start", file=sys.stderr, flush=True)
        return 1
    problem = join_problem(int(str(node["world_size"])))
    if problem is not None:
        print(f"neocloud: {problem}", file=sys.stderr, flush=True)
        return 1
    try:
        driver = subprocess.Popen(argv)
    except OSError as e:  # as the runner's own shim says it for a job without --ray
        print(f"neocloud: cannot run {argv[0]!r}: {e}", file=sys.stderr, flush=True)
        return 127
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: driver.send_signal(signum))
    code = driver.wait()
    return 128 - code if code < 0 else code


def run_worker(node: dict[str, object]) -> int:
    head = str(node["head"])

    def on_term(_signum: int, _frame: object) -> None:
        """A notice: serve the driver through its grace while the head is up; once it is gone, the job
        is over (the executor stops the ranks left when the driver exits). A handler, not SIG_IGN, which
        Ray's processes and the tenant's tasks would inherit."""
        if not reachable(head):
            sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while subprocess.run(start_args(node), stdin=subprocess.DEVNULL).returncode != 0:
        if time.monotonic() > deadline:
            print(
                f"neocloud: could not join the private Ray head at {head} in {JOIN_TIMEOUT_S:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            return 1
        time.sleep(1.0)
    misses = 0
    while misses < HEAD_GONE_AFTER:
        misses = 0 if reachable(head) else misses + 1
        time.sleep(1.0)
    return 0


def main() -> int:
    split = sys.argv.index("--")
    node = json.loads(sys.argv[1])
    argv = sys.argv[split + 1 :]
    return run_head(node, argv) if node["rank"] == 0 else run_worker(node)


if __name__ == "__main__":
    sys.exit(main())
