"""Workdir archives tenants upload: content-addressed storage with per-tenant quotas.
Imports neocloud.domain only (the archive format and its checks live in neocloud.domain.archive)."""

from neocloud.scheduler.artifacts.store import (
    ArtifactQuotas,
    ArtifactStore,
    LocalArtifactStore,
    StoredArtifact,
    check_archive_size,
    parse_digest,
    read_bytes,
    root_beside,
)

__all__ = [
    "ArtifactQuotas",
    "ArtifactStore",
    "LocalArtifactStore",
    "StoredArtifact",
    "check_archive_size",
    "parse_digest",
    "read_bytes",
    "root_beside",
]
