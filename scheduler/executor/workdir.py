"""A job's uploaded workdir, installed in its job directory on a node before a rank starts.

The bytes come from the executor (read from the artifact store by digest, handed over by Ray);
the hash is checked here, on the node, so what runs is what the tenant uploaded. Ranks of one job
on one node share the job directory: the first unpacks under a lock and leaves a marker, the
others find it. A requeued job finds its files as its last run left them (its checkpoints too).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

from neocloud.domain.archive import ArchiveLimits, unpack
from neocloud.domain.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

_PREFIX = "sha256:"


def install(job_dir: Path, digest: str, fetch: Callable[[], bytes], limits: ArchiveLimits | None = None) -> bool:
    """Unpack the archive `fetch` returns into `job_dir` unless this job's workdir is there already
    (then nothing is fetched); True if it was unpacked now. InvalidArgumentError if the bytes do not
    hash to `digest` or the archive is refused (naming the entry)."""
    marker = job_dir / f".workdir-{digest.removeprefix(_PREFIX)}"
    # The job may write in its directory (a requeued one has run there): never follow what it put there.
    lock = os.open(job_dir / ".workdir.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if os.path.lexists(marker):
            return False
        data = fetch()
        actual = _PREFIX + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise InvalidArgumentError(f"workdir {digest} arrived as {actual}: not unpacked")
        info = unpack(io.BytesIO(data), job_dir, limits or ArchiveLimits())
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    finally:
        os.close(lock)
    logger.info("unpacked workdir %s in %s: %d files, %d bytes", digest, job_dir, info.files, info.bytes)
    return True
