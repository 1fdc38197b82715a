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
    def read(self, job_id: str, offset: int) -> tuple[bytes, bool]:
        """Bytes of the job's output from `offset` (possibly empty: nothing new yet), and whether
        the output is complete (`eof`: nothing will ever follow what was returned). May block
        briefly; it is called from a worker thread."""
        ...


class ExecutorLogs:
    """A job's output as its executor keeps it: rank 0's, which runs the entry point."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def read(self, job_id: str, offset: int) -> tuple[bytes, bool]:
        try:
            return self._executor.read_log(job_id, 0, offset)
        except NotFoundError:
            return b"", False  # not started yet; the Logs stream ends once the job has


class NoLogs:
    """For a scheduler without an executor: every job's output is empty and complete."""

    def read(self, job_id: str, offset: int) -> tuple[bytes, bool]:
        return b"", True


class MemoryLogSource:
    """Output kept in memory: `append` what a job writes, `close` when it ends."""

    def __init__(self, max_read: int = 1 << 20) -> None:
        self._data: dict[str, bytearray] = {}
        self._closed: set[str] = set()
        self._lock = threading.Lock()
        self._max_read = max_read

    def append(self, job_id: str, data: bytes) -> None:
        with self._lock:
            if job_id in self._closed:
                raise ValueError(f"the output of job {job_id} is closed")
            self._data.setdefault(job_id, bytearray()).extend(data)

    def close(self, job_id: str) -> None:
        with self._lock:
            self._data.setdefault(job_id, bytearray())
            self._closed.add(job_id)

    def read(self, job_id: str, offset: int) -> tuple[bytes, bool]:
        with self._lock:
            data = self._data.get(job_id, bytearray())
            chunk = bytes(data[offset : offset + self._max_read])
            return chunk, job_id in self._closed and offset + len(chunk) >= len(data)
