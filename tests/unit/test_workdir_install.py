"""Installing a job's workdir on a node: the hash is checked, and ranks sharing a job directory
unpack it once."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from neocloud.domain.archive import ArchiveLimits, pack
from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.executor.workdir import install


def _archive(tmp_path: Path) -> tuple[bytes, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.py").write_text("print(1)\n")
    out = io.BytesIO()
    pack(src, out, ArchiveLimits())
    return out.getvalue(), "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()


def test_installs_once_and_checks_the_hash(tmp_path: Path) -> None:
    data, digest = _archive(tmp_path)
    job = tmp_path / "job"
    job.mkdir()
    fetched: list[int] = []

    def fetch() -> bytes:
        fetched.append(1)
        return data

    assert install(job, digest, fetch) is True
    assert install(job, digest, fetch) is False  # the second rank on this node: nothing fetched
    assert (job / "run.py").read_text() == "print(1)\n" and len(fetched) == 1

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InvalidArgumentError, match="arrived as"):
        install(other, digest, lambda: data + b"tampered")
    assert sorted(os.listdir(other)) == [".workdir.lock"]


def test_a_link_the_job_planted_in_its_directory_is_never_followed(tmp_path: Path) -> None:
    """A requeued job has run in its directory: a symlink at the lock's name must not make the
    runner (root) create a file where the link points."""
    data, digest = _archive(tmp_path)
    job = tmp_path / "job"
    job.mkdir()
    (job / ".workdir.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        install(job, digest, lambda: data)
    assert not (tmp_path / "elsewhere").exists() and not (job / "run.py").exists()
