"""Workdir retention (scheduler/artifacts/store.py, store/workdirs.py): an archive no job of its tenant
that has not ended names, and unused for the retention, is released; blobs go once nobody holds them."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neocloud.domain.archive import ArchiveLimits, pack
from neocloud.domain.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from neocloud.scheduler.artifacts import ArtifactQuotas, LocalArtifactStore, StoredArtifact
from neocloud.scheduler.artifacts.store import STALE_UPLOAD_S, Released
from neocloud.scheduler.store import settings
from neocloud.scheduler.store.db import open_db
from neocloud.scheduler.store.jobs import JobStore
from neocloud.scheduler.store.records import JobState
from neocloud.scheduler.store.workdirs import WorkdirStore
from tests.unit.test_job_store import GPUS, spec

RETENTION_S = 7 * 86400.0
QUOTAS = ArtifactQuotas(max_tenant_archives=2)


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[tuple[JobStore, WorkdirStore]]:
    store = JobStore(open_db(tmp_path / "scheduler.db", create=True))
    store.create_tenant("acme")
    store.create_tenant("globex")
    workdirs = WorkdirStore(open_db(tmp_path / "scheduler.db"))
    yield store, workdirs
    workdirs.close()
    store.close()


def upload(artifacts: LocalArtifactStore, tenant: str, marker: str, tmp_path: Path) -> StoredArtifact:
    work = tmp_path / f"work-{marker}"
    work.mkdir(exist_ok=True)
    (work / "run.py").write_text(f"print({marker!r})\n")
    packed = io.BytesIO()
    pack(work, packed, ArchiveLimits())
    packed.seek(0)
    return artifacts.put(tenant, packed, QUOTAS)


def age(artifacts: LocalArtifactStore, tenant: str, digest: str, seconds: float) -> None:
    """Make `tenant`'s last use of `digest` `seconds` ago."""
    link = artifacts._tenant_dir(tenant) / digest.removeprefix("sha256:")
    then = time.time() - seconds
    os.utime(link, (then, then))


def sweep(artifacts: LocalArtifactStore, in_use: dict[str, set[str]] | None = None) -> Released:
    return artifacts.release_unused(in_use or {}, time.time(), RETENTION_S)


def blobs(artifacts: LocalArtifactStore) -> set[str]:
    return {"sha256:" + name for name in os.listdir(artifacts.root / "blobs")}


def consistent(artifacts: LocalArtifactStore) -> bool:
    """Every link a tenant holds has its blob."""
    links = {link.name for mine in (artifacts.root / "tenants").iterdir() for link in mine.iterdir()}
    return links <= set(os.listdir(artifacts.root / "blobs"))


def test_unused_past_retention_is_released_and_its_blob_deleted(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    stored = upload(artifacts, "acme", "a", tmp_path)
    age(artifacts, "acme", stored.digest, RETENTION_S + 60)
    assert sweep(artifacts) == Released(archives=1, blobs=1, stale_uploads=0)
    assert not artifacts.owns("acme", stored.digest) and not artifacts.use("acme", stored.digest)
    assert artifacts.usage("acme") == (0, 0) and blobs(artifacts) == set()
    with pytest.raises(NotFoundError):
        artifacts.open(stored.digest)
    assert artifacts.released_total == 1


def test_kept_within_retention(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    stored = upload(artifacts, "acme", "a", tmp_path)
    age(artifacts, "acme", stored.digest, RETENTION_S - 60)
    assert sweep(artifacts) == Released(0, 0, 0)
    assert artifacts.owns("acme", stored.digest) and blobs(artifacts) == {stored.digest}


@pytest.mark.parametrize("renew", ["upload again", "named by a job"])
def test_a_use_starts_the_retention_again(artifacts: LocalArtifactStore, tmp_path: Path, renew: str) -> None:
    stored = upload(artifacts, "acme", "a", tmp_path)
    age(artifacts, "acme", stored.digest, RETENTION_S + 60)
    if renew == "upload again":
        assert upload(artifacts, "acme", "a", tmp_path) == stored
    else:
        assert artifacts.use("acme", stored.digest)
    assert sweep(artifacts).archives == 0 and artifacts.owns("acme", stored.digest)


def test_kept_while_a_job_that_has_not_ended_names_it(
    artifacts: LocalArtifactStore, jobs: tuple[JobStore, WorkdirStore], tmp_path: Path
) -> None:
    store, workdirs = jobs
    stored = upload(artifacts, "acme", "a", tmp_path)
    job = store.submit(spec(gpus=8, workdir_digest=stored.digest))
    age(artifacts, "acme", stored.digest, RETENTION_S * 10)
    assert workdirs.in_use() == {"acme": {stored.digest}}
    for step in ("queued", "running", "preempting", "requeued"):
        if step == "running":
            store.start(job.job_id, [("node-1", GPUS[:8])])
        elif step == "preempting":
            store.notify_preemption(job.job_id)
        elif step == "requeued":
            store.requeue(job.job_id)
        assert sweep(artifacts, workdirs.in_use()) == Released(0, 0, 0), step
        assert artifacts.owns("acme", stored.digest), step
    store.finish(job.job_id, JobState.CANCELLED)
    assert workdirs.in_use() == {}
    assert sweep(artifacts, workdirs.in_use()) == Released(1, 1, 0)


def test_a_shared_blob_stays_while_another_tenant_holds_it(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    mine = upload(artifacts, "acme", "same", tmp_path)
    assert upload(artifacts, "globex", "same", tmp_path) == mine
    age(artifacts, "acme", mine.digest, RETENTION_S + 60)
    assert sweep(artifacts) == Released(archives=1, blobs=0, stale_uploads=0)
    assert not artifacts.owns("acme", mine.digest) and artifacts.owns("globex", mine.digest)
    with artifacts.open(mine.digest) as blob:  # globex's jobs still get it
        assert blob.read()
    age(artifacts, "globex", mine.digest, RETENTION_S + 60)
    assert sweep(artifacts) == Released(archives=1, blobs=1, stale_uploads=0)


def test_a_tenant_cannot_keep_another_tenants_archive(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    """globex's jobs keep globex's links only: acme's archive is released (no longer charged to acme nor
    usable by it) whatever globex names; the blob stays only while a job that has not ended names it."""
    theirs = upload(artifacts, "acme", "a", tmp_path)
    age(artifacts, "acme", theirs.digest, RETENTION_S + 60)
    assert not artifacts.use("globex", theirs.digest)  # what Submit asks: globex may not name it
    assert sweep(artifacts, {"globex": {theirs.digest}}) == Released(archives=1, blobs=0, stale_uploads=0)
    assert not artifacts.owns("acme", theirs.digest) and artifacts.usage("acme") == (0, 0)
    assert sweep(artifacts) == Released(archives=0, blobs=1, stale_uploads=0)  # once that job has ended


def test_a_tenants_own_jobs_cannot_have_another_tenants_archive_released(
    artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    theirs = upload(artifacts, "acme", "a", tmp_path)  # fresh: within its retention
    assert sweep(artifacts, {"globex": {theirs.digest}}).archives == 0
    assert sweep(artifacts, {"globex": set()}).archives == 0
    assert artifacts.owns("acme", theirs.digest)


def test_the_quota_frees_up_after_a_release(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    first = upload(artifacts, "acme", "1", tmp_path)
    upload(artifacts, "acme", "2", tmp_path)
    with pytest.raises(ResourceExhaustedError, match="quota 2"):
        upload(artifacts, "acme", "3", tmp_path)
    age(artifacts, "acme", first.digest, RETENTION_S + 60)
    assert sweep(artifacts).archives == 1
    upload(artifacts, "acme", "3", tmp_path)
    assert artifacts.usage("acme")[0] == 2


def test_a_crash_between_link_and_blob_leaves_a_consistent_store(
    artifacts: LocalArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = upload(artifacts, "acme", "a", tmp_path)
    age(artifacts, "acme", stored.digest, RETENTION_S + 60)

    def crash(keep: object) -> int:
        raise OSError("killed")

    monkeypatch.setattr(artifacts, "_delete_blobs_except", crash)
    with pytest.raises(OSError, match="killed"):
        sweep(artifacts)
    assert not artifacts.owns("acme", stored.digest) and blobs(artifacts) == {stored.digest}
    assert consistent(artifacts)
    restarted = LocalArtifactStore(artifacts.root)
    assert sweep(restarted) == Released(archives=0, blobs=1, stale_uploads=0)  # the orphan goes next time
    assert consistent(restarted) and blobs(restarted) == set()
    assert upload(restarted, "acme", "a", tmp_path) == stored  # and it may be uploaded again


def test_an_orphan_blob_named_by_a_job_stays(artifacts: LocalArtifactStore, tmp_path: Path) -> None:
    stored = upload(artifacts, "acme", "a", tmp_path)
    (artifacts._tenant_dir("acme") / stored.digest.removeprefix("sha256:")).unlink()
    assert sweep(artifacts, {"acme": {stored.digest}}) == Released(0, 0, 0)
    assert blobs(artifacts) == {stored.digest}


def test_stale_uploads_are_removed(artifacts: LocalArtifactStore) -> None:
    stale, fresh = artifacts.root / "tmp" / "cut-by-a-crash", artifacts.root / "tmp" / "being-stored"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    then = time.time() - STALE_UPLOAD_S - 60
    os.utime(stale, (then, then))
    assert sweep(artifacts) == Released(archives=0, blobs=0, stale_uploads=1)
    assert os.listdir(artifacts.root / "tmp") == [fresh.name]


def test_the_retention_setting_has_bounds() -> None:
    assert settings.SETTINGS["workdir_retention_s"].default == 7 * 86400
    assert settings.parse("workdir_retention_s", "3600") == 3600
    for bad in ("59", "-1", "1e99", "a week"):
        with pytest.raises(InvalidArgumentError, match="workdir_retention_s"):
            settings.parse("workdir_retention_s", bad)
