"""The embedded Ray head as a process of its own, beside the scheduler's store.

`neocloud scheduler --ray-address embedded` used to start Ray inside the
scheduler, so a scheduler restart took the head, every running job and the GPU
nodes' membership with it. Now the scheduler starts (or finds) a head with
`ray start --head --block` in a session of its own, not a child that dies with
it, and connects to it as any other cluster; a restarted scheduler finds it
alive and re-attaches to its jobs.

Beside the store `DB`: `DB.ray-head` (JSON: the head's address, the pid of its
`ray start --block`, its temp dir), `DB.ray-head.log`, and Ray's own files under
`ray/` in the store's directory. `ray start --block` runs Ray's processes and
takes them all down when it gets SIGTERM (or, through Ray's reaper, when it
dies); stop_head() sends that. No Ray import here: the head is a CLI process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from neocloud.wire.netaddr import free_loopback_port

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6379
START_TIMEOUT_S = 60.0  # Ray's head takes 5-15 s on a busy machine
STOP_TIMEOUT_S = 30.0
# Ray names unix sockets under <temp dir>/session_<date>_<pid>/sockets/; the kernel
# allows 107 bytes for such a path, so Ray's temp dir must stay short.
MAX_TEMP_DIR_CHARS = 40


class EmbeddedHeadError(RuntimeError):
    """The embedded head cannot be started or reached; the message says why."""


@dataclass(frozen=True, slots=True)
class Head:
    address: str  # the GCS address GPU nodes join: `ray start --address ADDRESS`
    pid: int  # the `ray start --block` process: its session holds the whole head
    temp_dir: str


def head_file(db_path: str | Path) -> Path:
    return Path(f"{db_path}.ray-head")


def running_head(db_path: str | Path) -> Head | None:
    """The head recorded beside the store, if it is still up."""
    path = head_file(db_path)
    try:
        head = Head(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        logger.warning("ignoring %s: %s", path, e)
        return None
    return head if _is_head_process(head) and _accepts(head.address) else None


def auth_env(db_path: str | Path) -> dict[str, str]:
    """What a process needs in its environment to join or use the head (Ray's token authentication)."""
    return token_env(Path(f"{db_path}.ray-token").resolve())


def token_env(token_path: Path) -> dict[str, str]:
    """Ray's token authentication with the token in `token_path`, as Ray reads it from the environment."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def ensure_head(db_path: str | Path, port: int = DEFAULT_PORT) -> str:
    """The address of the embedded head of this store: the one running, or a new one.
    This process's environment gets auth_env(), so its ray.init() is let in: call
    it before Ray is imported (Ray reads its RAY_* settings once, on import)."""
    ensure_token(Path(auth_env(db_path)["RAY_AUTH_TOKEN_PATH"]))
    os.environ.update(auth_env(db_path))
    head = running_head(db_path)
    if head is not None:
        logger.info("the embedded Ray head is up at %s (pid %d): re-attaching", head.address, head.pid)
        return head.address
    return _start(db_path, port).address


def stop_head(db_path: str | Path) -> bool:
    """Stop the store's embedded head, and with it every job still on Ray; False if none ran."""
    path = head_file(db_path)
    head = running_head(db_path)
    if head is None:
        path.unlink(missing_ok=True)
        return False
    os.kill(head.pid, signal.SIGTERM)  # `ray start --block` stops every process of the head
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_head_process(head) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_head_process(head):
        logger.warning(
            "the Ray head (pid %d) ignored SIGTERM for %.0f s: killing its session", head.pid, STOP_TIMEOUT_S
        )
        os.killpg(head.pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    logger.info("stopped the embedded Ray head at %s", head.address)
    return True


def _start(db_path: str | Path, port: int) -> Head:
    state = Path(db_path).resolve().parent
    temp_dir = state / "ray"
    if len(str(temp_dir)) > MAX_TEMP_DIR_CHARS:
        raise EmbeddedHeadError(
            f"Ray's directory {temp_dir} is longer than {MAX_TEMP_DIR_CHARS} characters (its socket paths "
            "would not fit): put the store in a shorter directory, or start Ray yourself and pass --ray-address"
        )
    temp_dir.mkdir(parents=True, exist_ok=True)
    address_file = temp_dir / "ray_current_cluster"  # written by `ray start` once the head is up
    address_file.unlink(missing_ok=True)
    log_path = Path(f"{db_path}.ray-head.log")
    argv = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-gpus=0",
        f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false", "--disable-usage-stats",
        # Ray's client server cannot be turned off; its fixed default (10001) would collide between heads.
        f"--ray-client-server-port={free_loopback_port()}",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        # A session of its own: neither the scheduler's death nor a signal to its group reaches the head.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | auth_env(db_path),
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not address_file.exists():
        if proc.poll() is not None:
            raise EmbeddedHeadError(f"`ray start --head` exited with status {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise EmbeddedHeadError(f"the Ray head did not come up in {START_TIMEOUT_S:.0f} s; see {log_path}")
        time.sleep(0.1)
    head = Head(address_file.read_text().strip(), proc.pid, str(temp_dir))
    path = head_file(db_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(head)) + "\n")
    os.replace(tmp, path)
    logger.warning(
        "started the embedded Ray head at %s (pid %d, log %s); it outlives the scheduler: stop it with "
        "`neocloud scheduler --db %s --stop-ray-head`",
        head.address, head.pid, log_path, db_path,
    )  # fmt: skip
    return head


def ensure_token(path: Path) -> None:
    """A Ray token in `path`, made once and kept (GPU nodes hold a copy), readable by its owner only.
    Explicit, because otherwise `ray start` turns authentication on or off by whether ~/.ray holds a token."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def _is_head_process(head: Head) -> bool:
    """The pid is still our `ray start --head` (not a reused pid, not a zombie)."""
    try:
        argv = Path(f"/proc/{head.pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{head.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z" and b"--head" in argv and f"--temp-dir={head.temp_dir}".encode() in argv


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False
