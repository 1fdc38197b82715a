"""Where uploaded workdirs live: one small interface, and a local directory behind it.

`ArtifactStore` is the place an object store plugs in for a large site (S3, GCS: `put` streams to a
staging key, then copies to the digest's key; `owns` is a per-tenant index). `LocalArtifactStore` keeps,
under one directory beside the database:

    blobs/<sha256 hex>          each archive once, whoever uploaded it (written to tmp/, then renamed)
    tenants/<key>/<sha256 hex>  an empty file per archive a tenant holds (what it may name in a job);
                                its mtime is when the tenant last used it
    tmp/                        uploads being stored

A tenant is charged for every archive it holds (bytes and count), even where another tenant holds
the same content: quotas then do not depend on what others did.

Retention. A link's mtime is when the tenant last used the archive: uploaded it again, or submitted a
job naming it. A sweep (`release_unused`, every 10 minutes from the scheduler) releases a tenant's
archive once no job of that tenant that has not ended (queued, requeued, running, preempting) names it
and its last use is more than the site setting `workdir_retention_s` ago (default 7 days): the link is
removed, so the archive no longer counts against the tenant's quotas and a job naming it is refused
as for a digest never uploaded (NOT_FOUND). A blob is deleted once no tenant links it and no job that
has not ended names it. Only a tenant's own uploads and jobs keep its link, so no tenant can keep
another's archive charged or usable, nor have it released. Links go before blobs, under the store's
lock: a crash in between leaves a blob nobody links (the next sweep deletes it), never a link or a
job's digest without its blob. Files in tmp/ older than an hour (an upload cut short by a crash) go too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Set
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
STALE_UPLOAD_S = 3600.0  # far longer than any upload takes to be stored


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


@dataclass(frozen=True, slots=True)
class Released:
    """What one sweep removed: tenants' links (archives released), blobs, stale uploads."""

    archives: int
    blobs: int
    stale_uploads: int


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
        """Whether `tenant` holds `digest` (and so may name it in a job)."""
        ...

    def use(self, tenant: str, digest: str) -> bool:
        """As `owns`, and if so the archive's retention starts again now (a job names it)."""
        ...

    def release_unused(self, in_use: Mapping[str, Set[str]], now: float, retention_s: float) -> Released:
        """Release what tenants have not used for `retention_s` and `in_use` (tenant -> digests its
        jobs that have not ended name) does not name; delete blobs no tenant holds any longer."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """The archive's bytes; NotFoundError if it is not stored."""
        ...


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("blobs", "tenants", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()  # quota check and commit, one upload (or sweep) at a time
        self.released_total = 0  # archives released by sweeps since start (a metric)

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
                (mine / hexdigest).touch()  # its retention starts again
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

    def use(self, tenant: str, digest: str) -> bool:
        link = self._tenant_dir(tenant) / parse_digest(digest)
        with self._lock:  # not released between the check and the touch
            try:
                os.utime(link)
            except FileNotFoundError:
                return False
        return True

    def release_unused(self, in_use: Mapping[str, Set[str]], now: float, retention_s: float) -> Released:
        kept = {self._tenant_dir(t).name: {d.removeprefix(DIGEST_PREFIX) for d in ds} for t, ds in in_use.items()}
        with self._lock:
            released, linked = self._release_links(kept, now - retention_s)
            named = set().union(*kept.values())  # by any tenant's job: its blob stays, linked or not
            blobs = self._delete_blobs_except(linked | named)
            self.released_total += released
        return Released(released, blobs, self._remove_stale_uploads(now - STALE_UPLOAD_S))

    def _release_links(self, kept: Mapping[str, Set[str]], used_before: float) -> tuple[int, set[str]]:
        """Remove each tenant's links last used before `used_before` and not kept for it (by its
        hashed directory name); the number removed, and the hex digests still linked by anyone."""
        released, linked = 0, set()
        for mine in (self.root / "tenants").iterdir():
            removed = False
            for link in mine.iterdir():
                if link.name not in kept.get(mine.name, ()) and link.stat().st_mtime < used_before:
                    link.unlink()
                    removed = True
                    released += 1
                else:
                    linked.add(link.name)
            if removed:
                _fsync_dir(mine)  # the link is gone for good before its blob may go
        return released, linked

    def _delete_blobs_except(self, keep: Set[str]) -> int:
        deleted = 0
        for blob in (self.root / "blobs").iterdir():
            if blob.name not in keep:
                blob.unlink()
                deleted += 1
        return deleted

    def _remove_stale_uploads(self, written_before: float) -> int:
        removed = 0
        for upload in (self.root / "tmp").iterdir():
            try:  # an upload being stored removes its own file when it ends, lock or not
                if upload.stat().st_mtime < written_before:
                    upload.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
