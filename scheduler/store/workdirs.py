"""Which uploaded workdirs jobs still need: the digests named by each tenant's jobs that have not
ended (queued, requeued after a preemption, running, preempting). The artifact store keeps these
whatever their age (LocalArtifactStore.release_unused); a job that has ended needs its workdir no more."""

from __future__ import annotations

import logging

from neocloud.scheduler.store.base import StoreBase
from neocloud.scheduler.store.records import JobState

logger = logging.getLogger(__name__)

# Every state a job has before it ends, spelled out so that the jobs_by_state index serves the query.
_NOT_ENDED = ", ".join(f"'{s.value}'" for s in JobState if not s.terminal)


class WorkdirStore(StoreBase):
    def in_use(self) -> dict[str, set[str]]:
        """tenant -> the workdir digests ("sha256:<hex>") its jobs that have not ended name."""
        used: dict[str, set[str]] = {}
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT tenant, workdir_digest FROM jobs"
                f" WHERE state IN ({_NOT_ENDED}) AND workdir_digest != ''"
            ).fetchall()
        for tenant, digest in rows:
            used.setdefault(str(tenant), set()).add(str(digest))
        return used
