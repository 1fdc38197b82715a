"""Where a job's output comes from: a small interface the executor implements,
and an in-memory one for tests and the demo."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from neocloud.domain.errors import NotFoundError
from neocloud.scheduler.executor.types import Executor

logger = logging.getLogger(__name__)


class LogSource(Protocol):
    def read(self, job_id: str, offset: int, rank: int = 0) -> tuple[bytes, bool]:
        """Bytes of the output of the job's rank `rank` from `offset` (possibly empty: nothing new
        yet), and whether that output is complete (`eof`: nothing will ever follow what was
        returned). May block briefly; it is called from a worker thread."""
        ...


class ExecutorLogs:
    """A job's output as its executor keeps it, one log per rank."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def read(self, job_id: str, offset: int, rank: int = 0) -> tuple[bytes, bool]:
        try:
            return self._executor.read_log(job_id, rank, offset)
        except NotFoundError:
            return b"", False  # not started yet; the Logs stream ends once the job has


class NoLogs:
    """For a scheduler without an executor: every job's output is empty and complete."""

    def read(self, job_id: str, offset: int, rank: int = 0) -> tuple[bytes, bool]:
        return b"", True


class MemoryLogSource:
    """Output kept in memory, per rank: `append` what a rank writes, `close` when it ends."""

    def __init__(self, max_read: int = 1 << 20) -> None:
        self._data: dict[tuple[str, int], bytearray] = {}
        self._closed: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._max_read = max_read

    def append(self, job_id: str, data: bytes, rank: int = 0) -> None:
        with self._lock:
            if (job_id, rank) in self._closed:
                raise ValueError(f"the output of job {job_id} rank {rank} is closed")
            self._data.setdefault((job_id, rank), bytearray()).extend(data)

    def close(self, job_id: str, rank: int = 0) -> None:
        with self._lock:
            self._data.setdefault((job_id, rank), bytearray())
            self._closed.add((job_id, rank))

    def read(self, job_id: str, offset: int, rank: int = 0) -> tuple[bytes, bool]:
        with self._lock:
            data = self._data.get((job_id, rank), bytearray())
            chunk = bytes(data[offset : offset + self._max_read])
            return chunk, (job_id, rank) in self._closed and offset + len(chunk) >= len(data)
