"""Where uploaded workdirs live: one small interface, and a local directory behind it.

`ArtifactStore` is the place an object store plugs in for a large site (S3, GCS: `put` streams to a
staging key, then copies to the digest's key; `owns` is a per-tenant index). `LocalArtifactStore` keeps,
under one directory beside the database:

    blobs/<sha256 hex>          each archive once, whoever uploaded it (written to tmp/, then renamed)
    tenants/<key>/<sha256 hex>  an empty file per archive a tenant uploaded: what it may name in a job
    tmp/                        uploads being stored

A tenant is charged for every archive it uploaded (bytes and count), even where another tenant holds
the same content: quotas then do not depend on what others did. Archives are never deleted yet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from neocloud.domain.archive import ArchiveLimits, check
from neocloud.domain.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from neocloud.scheduler.store.settings import SETTINGS, SettingValue

logger = logging.getLogger(__name__)

DIGEST_PREFIX = "sha256:"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_COPY = 1 << 20


@dataclass(frozen=True, slots=True)
class ArtifactQuotas:
    """Defaults from the site settings (`neocloud admin set workdir_max_...`), which override them."""

    max_archive_bytes: int = int(SETTINGS["workdir_max_archive_bytes"].default)  # one upload, compressed
    max_tenant_bytes: int = int(SETTINGS["workdir_max_tenant_bytes"].default)  # all a tenant uploaded, compressed
    max_tenant_archives: int = int(SETTINGS["workdir_max_tenant_archives"].default)
    unpack: ArchiveLimits = field(default_factory=ArchiveLimits)  # files and bytes once unpacked

    @classmethod
    def from_settings(cls, values: Mapping[str, SettingValue]) -> ArtifactQuotas:
        """The quotas of the site's effective settings (JobStore.get_settings)."""
        return cls(
            max_archive_bytes=int(values["workdir_max_archive_bytes"]),
            max_tenant_bytes=int(values["workdir_max_tenant_bytes"]),
            max_tenant_archives=int(values["workdir_max_tenant_archives"]),
        )


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    digest: str  # "sha256:<hex>"
    size: int
    files: int


def root_beside(db_path: str) -> Path:
    """Where a scheduler keeps workdirs by default: beside its database."""
    return Path(f"{db_path}.artifacts")


def read_bytes(root: Path, digest: str) -> bytes:
    """A whole stored archive (what the executor hands to the runners), from the store under `root`."""
    with LocalArtifactStore(root).open(digest) as blob:
        return blob.read()


def parse_digest(digest: str) -> str:
    """The hex of a "sha256:<64 hex>" digest; InvalidArgumentError otherwise."""
    if not _DIGEST.fullmatch(digest):
        raise InvalidArgumentError(f"workdir digest {digest[:80]!r} is not 'sha256:' and 64 lowercase hex digits")
    return digest.removeprefix(DIGEST_PREFIX)


def check_archive_size(size: int, quotas: ArtifactQuotas) -> None:
    """ResourceExhaustedError once an upload has passed the per-archive quota."""
    if size > quotas.max_archive_bytes:
        raise ResourceExhaustedError(
            f"workdir archive is larger than the per-archive quota of {quotas.max_archive_bytes} bytes"
        )


class ArtifactStore(Protocol):
    def put(self, tenant: str, stream: IO[bytes], quotas: ArtifactQuotas) -> StoredArtifact:
        """Store the archive read from `stream` for `tenant`: InvalidArgumentError for a bad archive
        (naming the entry), ResourceExhaustedError past a quota (naming it)."""
        ...

    def owns(self, tenant: str, digest: str) -> bool:
        """Whether `tenant` uploaded `digest` (and so may name it in a job)."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """The archive's bytes; NotFoundError if it is not stored."""
        ...


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("blobs", "tenants", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()  # quota check and commit, one upload at a time

    def _tenant_dir(self, tenant: str) -> Path:
        # Tenant names are checked by the store, but a path is built from a hash all the same.
        return self.root / "tenants" / hashlib.sha256(tenant.encode()).hexdigest()[:32]

    def put(self, tenant: str, stream: IO[bytes], quotas: ArtifactQuotas) -> StoredArtifact:
        q = quotas
        digest, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as tmp:
            try:
                while chunk := stream.read(_COPY):
                    size += len(chunk)
                    check_archive_size(size, q)
                    digest.update(chunk)
                    tmp.write(chunk)
                tmp.flush()
                tmp.seek(0)
                info = check(tmp, q.unpack)  # once, here: a job never starts on a bad archive
                os.fsync(tmp.fileno())
                return self._commit(tenant, digest.hexdigest(), size, Path(tmp.name), info.files, q)
            finally:
                Path(tmp.name).unlink(missing_ok=True)

    def _commit(
        self, tenant: str, hexdigest: str, size: int, staged: Path, files: int, q: ArtifactQuotas
    ) -> StoredArtifact:
        mine = self._tenant_dir(tenant)
        stored = StoredArtifact(DIGEST_PREFIX + hexdigest, size, files)
        with self._lock:
            if (mine / hexdigest).exists():
                return stored  # the same upload again: nothing new stored or charged
            count, used = self.usage(tenant)
            if count >= q.max_tenant_archives:
                raise ResourceExhaustedError(
                    f"tenant {tenant} holds {count} workdir archives (quota {q.max_tenant_archives})"
                )
            if used + size > q.max_tenant_bytes:
                raise ResourceExhaustedError(
                    f"tenant {tenant}'s workdir archives would take {used + size} bytes (quota {q.max_tenant_bytes})"
                )
            blob = self.root / "blobs" / hexdigest
            if not blob.exists():
                os.replace(staged, blob)
            mine.mkdir(exist_ok=True, mode=0o700)
            (mine / hexdigest).touch()
        logger.info("stored workdir %s for %s: %d bytes, %d files", stored.digest, tenant, size, files)
        return stored

    def owns(self, tenant: str, digest: str) -> bool:
        return (self._tenant_dir(tenant) / parse_digest(digest)).exists()

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.root / "blobs" / parse_digest(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"workdir {digest} is not stored") from None

    def usage(self, tenant: str) -> tuple[int, int]:
        """(archives, bytes) `tenant` is charged for."""
        mine = self._tenant_dir(tenant)
        held = os.listdir(mine) if mine.is_dir() else []
        return len(held), sum(os.stat(self.root / "blobs" / h).st_size for h in held)
