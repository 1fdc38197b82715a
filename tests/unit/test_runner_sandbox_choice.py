"""How the runner starts a rank (rank_start.spawn): as its tenant's uid in the sandbox where the node
enforces it, internal work included; unsandboxed only where the node cannot (internal work is
expected there and logged at info, a tenant's only with --allow-unsandboxed-tenants: a warning),
with the limits it asked for or else its GPUs' share of the node. The runner runs in this process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from neocloud.scheduler.executor import procs, rank_start, sandbox
from neocloud.scheduler.executor import runner as runner_mod
from neocloud.scheduler.executor.rank import RankStatus
from neocloud.scheduler.executor.runner import Runner
from neocloud.scheduler.executor.types import ExecJob

GIB = 1 << 30
UNSANDBOXABLE = sandbox.Capabilities(
    bwrap=False, uid_switch=True, cgroup="v1", missing=("bubblewrap (bwrap) namespaces",)
)
FULL = sandbox.Capabilities(bwrap=True, uid_switch=True, cgroup="v1", missing=())


def run(tmp_path: Path, job: ExecJob, inventory: tuple[str, ...] = ()) -> RankStatus:
    r = Runner(job, 0, 1, "node-a", inventory, str(tmp_path / "logs"))
    r.launch(("127.0.0.1", 0))
    st = r.status()
    deadline = time.monotonic() + 15
    while not st.ended and time.monotonic() < deadline:
        st = r.watch(st.version, 0.5)
    r.reap(5.0)
    assert st.ended and st.exit_code == 0, r.read_log(0, 1 << 20)[0]
    return st


@pytest.fixture
def caps(monkeypatch: pytest.MonkeyPatch) -> list[sandbox.Capabilities]:
    """What the node's probe answers (the first entry), and one GPU (index 1) from Ray."""
    answer = [UNSANDBOXABLE]
    monkeypatch.setattr(sandbox, "node_capabilities", lambda: answer[0])
    monkeypatch.setattr(runner_mod, "_ray_identity", lambda: ("ray-node", "127.0.0.1", [1]))
    return answer


@pytest.fixture
def sandboxed(monkeypatch: pytest.MonkeyPatch, caps: list[sandbox.Capabilities]) -> list[sandbox.SandboxSpec]:
    """A node that enforces the sandbox, 16 GiB and 8 cores; the specs the runner asked for
    (the rank itself runs unsandboxed here: the real sandbox is tests/integration/test_sandbox*)."""
    caps[0] = FULL
    specs: list[sandbox.SandboxSpec] = []

    def spawn_sandboxed(
        argv: list[str], env: Mapping[str, str], log: Path, spec: sandbox.SandboxSpec
    ) -> tuple[subprocess.Popen[bytes], sandbox.Proof]:
        specs.append(spec)
        uid = sandbox.tenant_uid(spec.tenant)
        return procs.spawn(argv, env, log), sandbox.Proof(uid, uid, (), spec.memory_bytes, 64, spec.cpus, "v1")

    monkeypatch.setattr(procs, "spawn_sandboxed", spawn_sandboxed)
    monkeypatch.setattr(sandbox, "mem_total_bytes", lambda: 16 * GIB)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    return specs


def job(**kw: Any) -> ExecJob:
    return ExecJob("j1", command=[sys.executable, "-c", "pass"], **kw)


def test_internal_work_on_a_node_that_cannot_sandbox_runs_unsandboxed_and_says_so_at_info(
    tmp_path: Path, caps: list[sandbox.Capabilities], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=rank_start.__name__)
    st = run(tmp_path, job(tenant="vision-team", internal=True))
    assert json.loads(st.sandbox) == {"unsandboxed": list(UNSANDBOXABLE.missing)}
    (record,) = [r for r in caplog.records if "UNSANDBOXED" in r.getMessage()]
    assert record.levelno == logging.INFO


def test_a_tenants_rank_on_such_a_node_is_a_warning(
    tmp_path: Path, caps: list[sandbox.Capabilities], caplog: pytest.LogCaptureFixture
) -> None:
    st = run(tmp_path, job(tenant="acme"))  # only there with --allow-unsandboxed-tenants
    assert json.loads(st.sandbox) == {"unsandboxed": list(UNSANDBOXABLE.missing)}
    (record,) = [r for r in caplog.records if "UNSANDBOXED" in r.getMessage()]
    assert record.levelno == logging.WARNING


def test_internal_work_is_sandboxed_as_its_own_tenant_where_the_node_can(
    tmp_path: Path, sandboxed: list[sandbox.SandboxSpec]
) -> None:
    st = run(tmp_path, job(tenant="vision-team", internal=True), ("GPU-0", "GPU-1", "GPU-2", "GPU-3"))
    (spec,) = sandboxed
    assert spec.tenant == "vision-team" and spec.gpu_indices == (1,)
    assert json.loads(st.sandbox)["uid"] == sandbox.tenant_uid("vision-team")


def test_a_rank_that_asked_for_no_limits_gets_its_gpus_share_of_the_node(
    tmp_path: Path, sandboxed: list[sandbox.SandboxSpec]
) -> None:
    st = run(tmp_path, job(tenant="acme"), ("GPU-0", "GPU-1", "GPU-2", "GPU-3"))  # 1 of 4 GPUs
    expected = sandbox.default_limits(16 * GIB, 8, 1, 4)
    assert (
        (sandboxed[0].memory_bytes, sandboxed[0].cpus)
        == (expected.memory_bytes, expected.cpus)
        == (
            (14 * GIB) // 4,
            2,
        )
    )
    proof = json.loads(st.sandbox)
    assert (proof["memory_bytes"], proof["cpus"]) == ((14 * GIB) // 4, 2)  # the real limits, never 0


def test_without_an_inventory_the_share_is_the_whole_node_less_the_reserve(
    tmp_path: Path, sandboxed: list[sandbox.SandboxSpec]
) -> None:
    run(tmp_path, job(tenant="acme"))
    assert (sandboxed[0].memory_bytes, sandboxed[0].cpus) == (14 * GIB, 8)


def test_explicit_memory_and_cpus_win(tmp_path: Path, sandboxed: list[sandbox.SandboxSpec]) -> None:
    run(tmp_path, job(tenant="acme", memory_bytes=GIB, cpus=3), ("GPU-0", "GPU-1", "GPU-2", "GPU-3"))
    assert (sandboxed[0].memory_bytes, sandboxed[0].cpus) == (GIB, 3)


def test_the_labs_tooling_without_a_tenant_is_never_sandboxed(
    tmp_path: Path, sandboxed: list[sandbox.SandboxSpec]
) -> None:
    st = run(tmp_path, job())
    assert sandboxed == [] and st.sandbox == ""
