"""Workdir retention end to end: a released digest is refused at Submit as an unknown one is, and the
scheduler sweeps at start (and periodically), counted in neocloud_scheduler_workdirs_released_total."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from neocloud.domain.archive import ArchiveLimits, pack
from neocloud.scheduler.artifacts import ArtifactQuotas, LocalArtifactStore, root_beside
from neocloud.scheduler.server import BackgroundScheduler
from neocloud.scheduler.store.records import JobState
from neocloud.v1 import jobs_pb2
from tests.helpers import wait_until
from tests.integration.test_artifacts_api import QUOTAS, ArtifactApi, _workdir
from tests.unit.test_job_store import spec

WEEK_S = 7 * 86400
RELEASED = "neocloud_scheduler_workdirs_released_total"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ArtifactApi]:
    server = ArtifactApi(tmp_path / "scheduler.db", QUOTAS)
    yield server
    server.stop()


def _age(artifacts: LocalArtifactStore, tenant: str, digest: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(artifacts._tenant_dir(tenant) / digest.removeprefix("sha256:"), (then, then))


def _submit(api: ArtifactApi, who: str, digest: str) -> grpc.RpcError | jobs_pb2.Job:
    job_spec = jobs_pb2.JobSpec(job_class=jobs_pb2.JOB_CLASS_SPOT, gpus=1, command=["true"], workdir_digest=digest)
    try:
        return api.jobs.Submit(jobs_pb2.SubmitJobRequest(spec=job_spec), metadata=api.auth(who), timeout=10)
    except grpc.RpcError as e:
        return e


def test_a_released_digest_is_refused_as_an_unknown_one(api: ArtifactApi, tmp_path: Path) -> None:
    with api.client("acme") as acme:
        digest = acme.upload_workdir(_workdir(tmp_path / "w", "a"), timeout=10).digest
    _age(api.artifacts, "acme", digest, WEEK_S + 60)
    assert api.artifacts.release_unused({}, time.time(), WEEK_S).archives == 1
    refused, unknown = _submit(api, "acme", digest), _submit(api, "acme", "sha256:" + "0" * 64)
    assert isinstance(refused, grpc.RpcError) and isinstance(unknown, grpc.RpcError)
    assert refused.code() is unknown.code() is grpc.StatusCode.NOT_FOUND
    assert str(refused.details()).replace(digest, "D") == str(unknown.details()).replace("sha256:" + "0" * 64, "D")


def test_submit_marks_the_workdir_used_and_names_only_the_tenants_own(api: ArtifactApi, tmp_path: Path) -> None:
    with api.client("acme") as acme:
        digest = acme.upload_workdir(_workdir(tmp_path / "w", "a"), timeout=10).digest
    _age(api.artifacts, "acme", digest, WEEK_S + 60)
    # Another tenant naming it is refused, and that neither renews acme's retention nor records a job.
    refused = _submit(api, "globex", digest)
    assert isinstance(refused, grpc.RpcError) and refused.code() is grpc.StatusCode.NOT_FOUND
    assert api.store.list_jobs("globex", [], 10) == []
    assert api.artifacts.release_unused({}, time.time(), WEEK_S).archives == 1
    with api.client("acme") as acme:
        digest = acme.upload_workdir(_workdir(tmp_path / "w2", "b"), timeout=10).digest
    _age(api.artifacts, "acme", digest, WEEK_S + 60)
    job = _submit(api, "acme", digest)
    assert isinstance(job, jobs_pb2.Job)
    api.store.request_cancel(job.job_id)  # ended at once: only the submit's own use keeps it now
    assert api.artifacts.release_unused({}, time.time(), WEEK_S).archives == 0


def test_the_scheduler_sweeps_at_start_and_counts_releases(
    scheduler_factory: Callable[..., BackgroundScheduler], tmp_path: Path
) -> None:
    artifacts = LocalArtifactStore(root_beside(str(tmp_path / "scheduler.db")))
    stale, needed = (_put(artifacts, "acme", tmp_path, marker) for marker in ("stale", "needed"))
    for digest in (stale, needed):
        _age(artifacts, "acme", digest, WEEK_S + 60)
    sched = scheduler_factory()
    scheduler = sched.scheduler
    wait_until(lambda: scheduler.registry.get_sample_value(RELEASED) == 2.0, what="the sweep at start")
    assert scheduler.artifacts is not None and not scheduler.artifacts.owns("acme", stale)
    # A queued job keeps its workdir past the retention; once it has ended the next sweep releases it.
    scheduler.jobs.create_tenant("acme")
    again = _put(scheduler.artifacts, "acme", tmp_path, "needed")
    job = scheduler.jobs.submit(spec(gpus=1, gpus_per_node=1, workdir_digest=again))
    _age(scheduler.artifacts, "acme", again, WEEK_S + 60)
    released = scheduler.sweep_workdirs()
    assert released is not None and released.archives == 0 and scheduler.artifacts.owns("acme", again)
    scheduler.jobs.finish(job.job_id, JobState.SUCCEEDED)
    released = scheduler.sweep_workdirs()
    assert released is not None and (released.archives, released.blobs) == (1, 1)
    assert scheduler.registry.get_sample_value(RELEASED) == 3.0


def _put(artifacts: LocalArtifactStore, tenant: str, tmp_path: Path, marker: str) -> str:
    work = tmp_path / f"put-{marker}"
    work.mkdir(exist_ok=True)
    (work / "run.py").write_text(f"print({marker!r})\n")
    packed = io.BytesIO()
    pack(work, packed, ArchiveLimits())
    packed.seek(0)
    return artifacts.put(tenant, packed, ArtifactQuotas()).digest
