"""neocloud.v1.ArtifactService: a tenant uploads a workdir archive as a stream of chunks.

The chunks are spooled (in memory up to SPOOL_MEMORY_BYTES, then to a temporary file) while they
arrive, counted against the per-archive quota as they come, and handed to the ArtifactStore on a
worker thread, which checks the whole archive once and stores it under its SHA-256. The quotas are
the site settings workdir_max_archive_bytes, workdir_max_tenant_bytes and workdir_max_tenant_archives,
read at each upload. Uploading an archive the tenant holds already charges nothing and starts its
retention (workdir_retention_s; see scheduler/artifacts/store.py) again. Errors are raised, never
caught here: scheduler/api/errors.py maps them (INVALID_ARGUMENT for a bad archive or chunk,
RESOURCE_EXHAUSTED past a quota).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator

import grpc

from neocloud.domain.errors import InvalidArgumentError, PermissionDeniedError
from neocloud.scheduler.api.auth import Authenticator, own_tenant
from neocloud.scheduler.artifacts import ArtifactQuotas, ArtifactStore, check_archive_size
from neocloud.scheduler.store.jobs import JobStore
from neocloud.v1 import artifacts_pb2 as pb
from neocloud.v1 import artifacts_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

MAX_CHUNK_BYTES = 1 << 20
SPOOL_MEMORY_BYTES = 8 << 20


class ArtifactService(pb_grpc.ArtifactServiceServicer):
    def __init__(self, store: JobStore, artifacts: ArtifactStore, auth: Authenticator | None = None) -> None:
        self._store = store
        self._auth = auth or Authenticator(store)
        self._artifacts = artifacts

    async def Upload(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.UploadChunk], context: grpc.aio.ServicerContext
    ) -> pb.Artifact:
        principal = await self._auth.principal(context)
        tenant = own_tenant(principal)
        if tenant is None:
            raise PermissionDeniedError("operators do not upload workdirs: use a tenant or internal token")
        quotas = ArtifactQuotas.from_settings(await asyncio.to_thread(self._store.get_settings))
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            size = 0
            async for chunk in request_iterator:
                if len(chunk.data) > MAX_CHUNK_BYTES:
                    raise InvalidArgumentError(
                        f"UploadChunk.data has {len(chunk.data)} bytes (at most {MAX_CHUNK_BYTES})"
                    )
                size += len(chunk.data)
                check_archive_size(size, quotas)  # before spooling more than the quota
                await asyncio.to_thread(spool.write, chunk.data)  # past the memory part, a disk write
            spool.seek(0)
            stored = await asyncio.to_thread(self._artifacts.put, tenant, spool, quotas)
        return pb.Artifact(digest=stored.digest, size=stored.size, files=stored.files)
