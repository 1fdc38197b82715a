"""ArtifactService over real gRPC and a real store on disk: upload, dedup, quotas, hostile archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from neocloud.cli import build_parser
from neocloud.client import Client
from neocloud.domain.archive import ArchiveLimits, pack
from neocloud.scheduler.api.errors import ErrorInterceptor
from neocloud.scheduler.api.services import add_api_services
from neocloud.scheduler.artifacts import ArtifactQuotas, LocalArtifactStore
from neocloud.v1 import artifacts_pb2 as pb
from neocloud.v1 import artifacts_pb2_grpc, jobs_pb2
from tests.api_server import ApiServer

QUOTAS = ArtifactQuotas(max_archive_bytes=256 << 10, max_tenant_bytes=1 << 20, max_tenant_archives=3)


class ArtifactApi(ApiServer):
    """The API with ArtifactService; `quotas` become the site's settings (as `admin set` makes them)."""

    def __init__(self, db_path: Path, quotas: ArtifactQuotas) -> None:
        self.artifacts = LocalArtifactStore(db_path.with_name("artifacts"))
        super().__init__(db_path)
        self.stub = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)
        self.store.set_setting("workdir_max_archive_bytes", str(quotas.max_archive_bytes))
        self.store.set_setting("workdir_max_tenant_bytes", str(quotas.max_tenant_bytes))
        self.store.set_setting("workdir_max_tenant_archives", str(quotas.max_tenant_archives))

    async def _start(self) -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        add_api_services(server, self.store, self.logs, poll_interval_s=0.02, artifacts=self.artifacts)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server

    def client(self, who: str) -> Client:
        return Client(server=self.address, token=self.tokens[who], insecure=True)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ArtifactApi]:
    server = ArtifactApi(tmp_path / "scheduler.db", QUOTAS)
    yield server
    server.stop()


def _workdir(root: Path, marker: str) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "run.py").write_text(f"print({marker!r})\n")
    (root / "data" / "input.txt").write_text("42\n")
    (root / "notes.log").write_text("ignored")
    (root / ".neocloudignore").write_text("*.log\n")
    return root


def _blobs(api: ArtifactApi) -> list[str]:
    return os.listdir(api.artifacts.root / "blobs")


def test_upload_is_content_addressed_and_stored_once(api: ArtifactApi, tmp_path: Path) -> None:
    work = _workdir(tmp_path / "w", "a")
    packed = io.BytesIO()
    pack(work, packed, ArchiveLimits())
    with api.client("acme") as acme, api.client("globex") as globex:
        first = acme.upload_workdir(work, timeout=10)
        assert first.digest == "sha256:" + hashlib.sha256(packed.getvalue()).hexdigest()
        assert (first.size, first.files) == (len(packed.getvalue()), 3)  # run.py, input.txt, .neocloudignore
        assert acme.upload_workdir(work, timeout=10) == first  # again: nothing new
        assert api.artifacts.usage("acme") == (1, first.size)
        assert globex.upload_workdir(work, timeout=10).digest == first.digest
    assert _blobs(api) == [first.digest.removeprefix("sha256:")]  # one copy for both tenants
    assert api.artifacts.owns("acme", first.digest) and api.artifacts.owns("globex", first.digest)
    assert not api.artifacts.owns("internal", first.digest)


def test_quotas_are_resource_exhausted_naming_the_quota(api: ArtifactApi, tmp_path: Path) -> None:
    with api.client("acme") as acme:
        for i in range(3):
            acme.upload_workdir(_workdir(tmp_path / f"w{i}", str(i)), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            acme.upload_workdir(_workdir(tmp_path / "w3", "3"), timeout=10)
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 workdir archives (quota 3)" in str(e.value.details())
        big = tmp_path / "big"
        big.mkdir()
        (big / "noise").write_bytes(os.urandom(300 << 10))  # incompressible, past the 256 KiB archive quota
    with api.client("globex") as globex, pytest.raises(grpc.RpcError) as e:
        globex.upload_workdir(big, timeout=10)
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "per-archive quota of 262144 bytes" in str(e.value.details())
    assert len(_blobs(api)) == 3 and os.listdir(api.artifacts.root / "tmp") == []


def _hostile() -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("ok"), io.BytesIO())
        evil = tarfile.TarInfo("escape")
        evil.type, evil.linkname = tarfile.SYMTYPE, "../../../etc"
        tar.addfile(evil)
    return out.getvalue()


def test_bad_uploads_are_refused_with_documented_statuses(api: ArtifactApi, tmp_path: Path) -> None:
    def upload(who: str | None, *chunks: bytes) -> grpc.RpcError:
        metadata = api.auth(who) if who else []
        with pytest.raises(grpc.RpcError) as e:
            api.stub.Upload(iter([pb.UploadChunk(data=c) for c in chunks]), metadata=metadata, timeout=10)
        return e.value

    refused = upload("acme", _hostile())
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "'escape'" in str(refused.details())
    refused = upload("acme", b"not an archive")
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "not a whole gzip tar" in str(refused.details())
    whole = io.BytesIO()
    pack(_workdir(tmp_path / "w", "cut"), whole, ArchiveLimits())
    refused = upload("acme", whole.getvalue()[:-6])  # cut short: never INTERNAL
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "not a whole gzip tar" in str(refused.details())
    refused = upload("acme", b"x" * ((1 << 20) + 1))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "at most 1048576" in str(refused.details())
    assert upload("operator", _hostile()).code() is grpc.StatusCode.PERMISSION_DENIED
    assert upload(None, _hostile()).code() is grpc.StatusCode.UNAUTHENTICATED
    assert _blobs(api) == [] and os.listdir(api.artifacts.root / "tmp") == []


def test_a_job_names_only_its_own_tenants_workdir(api: ArtifactApi, tmp_path: Path) -> None:
    with api.client("acme") as acme, api.client("globex") as globex:
        mine = acme.upload_workdir(_workdir(tmp_path / "a", "acme"), timeout=10).digest
        theirs = globex.upload_workdir(_workdir(tmp_path / "g", "globex"), timeout=10).digest

    def submit(digest: str) -> jobs_pb2.Job:
        spec = jobs_pb2.JobSpec(
            job_class=jobs_pb2.JOB_CLASS_SPOT, gpus=1, command=["python", "run.py"], workdir_digest=digest
        )
        return api.jobs.Submit(jobs_pb2.SubmitJobRequest(spec=spec), metadata=api.auth("acme"), timeout=10)

    job = submit(mine)
    got = api.jobs.Get(jobs_pb2.GetJobRequest(job_id=job.job_id), metadata=api.auth("acme"), timeout=10)
    assert got.spec.workdir_digest == mine
    assert api.store.get(job.job_id).spec.workdir_digest == mine
    unknown = "sha256:" + "0" * 64
    for digest, code in ((theirs, "NOT_FOUND"), (unknown, "NOT_FOUND"), ("sha256:XYZ", "INVALID_ARGUMENT")):
        with pytest.raises(grpc.RpcError) as e:
            submit(digest)
        assert e.value.code().name == code, digest
    with pytest.raises(grpc.RpcError) as e:
        submit(theirs)
    # Word for word what an unknown digest gets: nothing says that another tenant has it.
    assert str(e.value.details()).replace(theirs, unknown) == _details_of(submit, unknown)


def _details_of(submit: Callable[[str], object], digest: str) -> str:
    with pytest.raises(grpc.RpcError) as e:
        submit(digest)
    return str(e.value.details())


def test_cli_submit_with_a_workdir(
    api: ArtifactApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEOCLOUD_SERVER", api.address)
    monkeypatch.setenv("NEOCLOUD_TOKEN", api.tokens["acme"])

    def run(*argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(list(argv))
        code = args.func(args)
        out, err = capsys.readouterr()
        return code, out, err

    work = _workdir(tmp_path / "w", "cli")
    code, out, err = run("submit", "--insecure", "--workdir", str(work), "--", "python", "run.py")
    assert code == 0, err
    digest = err.split()[2]
    assert api.store.get(out.split()[0]).spec.workdir_digest == digest and api.artifacts.owns("acme", digest)
    code, out, _ = run("job", "--insecure", out.split()[0])
    assert ["workdir", digest] in [line.replace(":", " ", 1).split() for line in out.splitlines()], out
    os.mkfifo(work / "pipe")
    code, _, err = run("submit", "--insecure", "--workdir", str(work), "--", "true")
    assert code == 2 and "pipe" in err and "fifo" in err
    code, _, err = run("submit", "--insecure", "--workdir", str(tmp_path / "nowhere"), "--", "true")
    assert code == 2 and "not a directory" in err
