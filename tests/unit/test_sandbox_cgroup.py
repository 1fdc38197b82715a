"""The limits a rank's cgroup gets, v1 and v2, written into a stand-in cgroup tree
(plain directories: the kernel's own files are exercised by tests/integration/test_sandbox.py
where this machine has them; here the v2 layout too, which this machine may not have)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from neocloud.scheduler.executor import sandbox


def test_v2_one_directory_with_memory_pids_cpu_and_delegated_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids")
    assert sandbox.cgroup_version(tmp_path) == "v2"
    cg = sandbox.RankCgroup("j-1", "v2", tmp_path)
    cg.create(memory_bytes=1 << 30, pids_max=128, cpus=2, devices=[])
    d = tmp_path / "neocloud" / "j-1"
    assert (d / "memory.max").read_text() == str(1 << 30)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == "128"
    assert (d / "cpu.max").read_text() == "200000 100000"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (tmp_path / "neocloud" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert cg.procs_files() == [str(d / "cgroup.procs")]


def test_v2_unlimited_memory_is_max(tmp_path: Path) -> None:
    sandbox.RankCgroup("j-2", "v2", tmp_path).create(memory_bytes=0, pids_max=64, cpus=0, devices=[])
    assert (tmp_path / "neocloud" / "j-2" / "memory.max").read_text() == "max"
    assert (tmp_path / "neocloud" / "j-2" / "cpu.max").read_text() == "100000 100000"  # 0: one core's worth


def test_v1_a_directory_per_controller_and_only_its_devices(tmp_path: Path) -> None:
    assert sandbox.cgroup_version(tmp_path) == "v1"
    gpu = tmp_path / "nvidia3"
    gpu.write_text("")  # stat() of a plain file: rdev 0:0, enough to see the rule written
    cg = sandbox.RankCgroup("j-3", "v1", tmp_path)
    cg.create(memory_bytes=1 << 20, pids_max=32, cpus=1, devices=[gpu])
    base = {c: tmp_path / c / "neocloud" / "j-3" for c in sandbox.V1_CONTROLLERS}
    assert (base["memory"] / "memory.limit_in_bytes").read_text() == str(1 << 20)
    assert (base["pids"] / "pids.max").read_text() == "32"
    assert (base["cpu"] / "cpu.cfs_quota_us").read_text() == "100000"
    assert (base["devices"] / "devices.deny").read_text() == "a"
    assert (base["devices"] / "devices.allow").read_text() == "c 0:0 rw"  # the last rule: its own GPU
    assert sorted(cg.procs_files()) == sorted(str(d / "cgroup.procs") for d in base.values())


def test_tenant_uids_are_stable_in_range_and_never_root() -> None:
    uids = {t: sandbox.tenant_uid(t) for t in ("acme", "globex", "internal")}
    assert uids == {t: sandbox.tenant_uid(t) for t in uids}
    assert all(sandbox.UID_BASE <= u < sandbox.UID_BASE + sandbox.UID_COUNT for u in uids.values())
    assert len(set(uids.values())) == 3


def test_a_node_without_pidfds_cannot_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """A --ray rank's notice goes through a pidfd; without them the node must say so, not skip the notice."""

    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    assert any(m.startswith("pidfd") for m in sandbox.probe().missing)
