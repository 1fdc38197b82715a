"""Ray's token authentication in deploy/: every Ray process of the `ray up` site and of the
KubeRay cluster, and the scheduler that drives them, run with RAY_AUTH_MODE=token and a token
file only the Ray user can read. (A client without the token is refused: tests/integration/
test_ray_lockdown.py; the embedded head: scheduler/executor/embedded_head.py.)"""

from __future__ import annotations

import pytest

pytest.importorskip("kubernetes_validate", reason="test_deploy_kubernetes's helpers need kubernetes-validate")

from tests.unit.test_deploy_kubernetes import RAY, SCHED_CLAIMS, SCHED_POD, SCHEDULER, mount_for
from tests.unit.test_deploy_ray import commands, drop_in, simple_commands

TOKEN = "/etc/neocloud/ray-token"
AUTH = "RAY_AUTH_MODE=token"


def ray_starts(section: str) -> list[list[str]]:
    return [w for cmd in commands(section) for w in simple_commands(cmd) if "start" in w and "/bin/ray" in " ".join(w)]


def token_path_of(words: list[str]) -> str:
    """The RAY_AUTH_TOKEN_PATH assigned before `ray start` in its simple command (`env` or the shell's)."""
    at = next(i for i, w in enumerate(words) if w.endswith("/bin/ray"))
    assigned = dict(w.split("=", 1) for w in words[:at] if "=" in w)
    assert assigned.get("RAY_AUTH_MODE") == "token", f"{' '.join(words)}: no {AUTH}"
    return assigned["RAY_AUTH_TOKEN_PATH"]


def test_every_ray_start_of_the_ray_up_site_uses_a_token_file() -> None:
    (head,) = ray_starts("head_start_ray_commands")
    (worker,) = ray_starts("worker_start_ray_commands")
    head_token = token_path_of(head)
    assert head_token == "$HOME/.ray/neocloud-token"
    assert token_path_of(worker) == TOKEN
    # The head's Ray runs as the ssh user: its own 0600 copy of the site's token.
    assert "sudo cat /etc/neocloud/ray-token | install -D -m 0600 /dev/stdin ~/.ray/neocloud-token" in commands(
        "head_setup_commands"
    )


def test_the_token_is_readable_by_the_ray_user_only() -> None:
    # GPU nodes: Ray (and the runners) run as neocloud-jobs; the head: the scheduler as neocloud.
    for section, user in (("worker_setup_commands", "neocloud-jobs"), ("head_setup_commands", "neocloud")):
        words = [w for cmd in commands(section) for w in simple_commands(cmd)]
        assert ["sudo", "chown", f"{user}:{user}", TOKEN] in words, section
        assert ["sudo", "chmod", "0400", TOKEN] in words, section
        checked = [cmd for cmd in commands(section) if f"sudo test -s {TOKEN}" in cmd]
        assert checked and "exit 1" in checked[0], f"{section} must stop where the token is missing"


def test_the_scheduler_on_the_ray_up_head_holds_the_token() -> None:
    lines = drop_in("/etc/systemd/system/neocloud-scheduler.service.d/ray.conf")
    assert f"Environment={AUTH}" in lines and f"Environment=RAY_AUTH_TOKEN_PATH={TOKEN}" in lines


def test_kuberay_turns_token_auth_on_and_the_scheduler_reads_the_same_secret() -> None:
    auth = RAY["spec"]["authOptions"]
    assert auth == {"mode": "token", "secretName": "neocloud-ray-token"}
    env = {e["name"]: e.get("value") for e in SCHEDULER["env"]}
    assert env["RAY_AUTH_MODE"] == "token"
    path = env["RAY_AUTH_TOKEN_PATH"]
    mount, volume = mount_for(SCHEDULER, SCHED_POD, path, SCHED_CLAIMS)
    assert mount.get("readOnly") is True
    secret = volume["secret"]
    assert secret["secretName"] == auth["secretName"]
    assert secret["defaultMode"] == 0o440  # the pod's uid through fsGroup, nobody else
    (item,) = [i for i in secret["items"] if path.endswith("/" + i["path"])]
    assert item["key"] == "auth_token"  # the key KubeRay reads from the Secret
