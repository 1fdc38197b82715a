"""Each tenant's own sandbox uid (store/uids.py, migration 13): given once at creation, never shared,
in name order for the tenants a store held before; the lab's own work is offset 0; the sandbox runs a
rank as the uid its job names. The hash of the name it replaces collides (shown below)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from neocloud.domain.errors import NotFoundError, ResourceExhaustedError
from neocloud.scheduler.executor import sandbox
from neocloud.scheduler.store import JobStore, open_db, uids
from neocloud.scheduler.store.db import MIGRATIONS, migrate


def test_tenants_get_offsets_of_their_own_in_creation_order() -> None:
    store = JobStore(open_db(":memory:"))
    for name in ("zeta", "acme", "globex"):
        store.create_tenant(name)
    assert [store.uid_offset(n) for n in ("zeta", "acme", "globex", "internal")] == [1, 2, 3, 0]
    assert {t.name: t.uid_offset for t in store.list_tenants()} == {"acme": 2, "globex": 3, "zeta": 1}
    with pytest.raises(NotFoundError):
        store.uid_offset("nobody")


def test_the_range_running_out_is_refused_and_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uids, "MAX_OFFSET", 2)
    store = JobStore(open_db(":memory:"))
    store.create_tenant("a")
    store.create_tenant("b")
    with pytest.raises(ResourceExhaustedError, match="every sandbox uid"):
        store.create_tenant("c")
    assert [t.name for t in store.list_tenants()] == ["a", "b"]


def test_a_store_from_before_gives_its_tenants_offsets_in_name_order(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    db.execute("PRAGMA user_version = 0")
    old = MIGRATIONS[:12]
    for script in old:  # the schema as it was, then three tenants made by that scheduler
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {len(old)}")
    for name in ("m", "b", "x"):
        db.execute("INSERT INTO tenants (name, weight, created_at) VALUES (?, 1.0, 0.0)", (name,))
    migrate(db, tmp_path / "old.db")
    store = JobStore(db)
    assert [store.uid_offset(n) for n in ("b", "m", "x")] == [1, 2, 3]
    store.create_tenant("new")
    assert store.uid_offset("new") == 4


def test_the_sandbox_runs_a_rank_as_the_uid_its_job_names(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the job directory to the tenant's uid")
    caps = sandbox.Capabilities(bwrap=True, uid_switch=True, cgroup="v1", missing=())
    box = sandbox.Sandbox(caps, cgroup_root=tmp_path / "cgroup")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    spec = sandbox.SandboxSpec(job_id="j1", rank=0, tenant="acme", job_dir=job_dir, uid_offset=7)
    prepared = box.command(["true"], spec)
    assert prepared.proof.uid == sandbox.UID_BASE + 7 == job_dir.stat().st_gid
    assert f"--reuid={sandbox.UID_BASE + 7}" in prepared.argv
    with pytest.raises(sandbox.SandboxError, match="outside the range"):
        box.command(["true"], sandbox.SandboxSpec("j2", 0, "acme", job_dir, uid_offset=sandbox.UID_COUNT))


def test_the_name_hash_it_replaces_collides() -> None:
    seen: dict[int, str] = {}
    for i in range(2000):
        uid = sandbox.tenant_uid(f"tenant-{i}")
        if uid in seen:
            return  # two tenants, one uid: why the store hands out offsets
        seen[uid] = f"tenant-{i}"
    raise AssertionError("no collision among 2,000 names (expected with 65,536 uids)")
