"""One SQLite connection shared by the API handlers (on worker threads) and the
controller: every write is one BEGIN IMMEDIATE ... COMMIT transaction, rolled
back whole on any error, and a lock keeps one thread's transaction from
interleaving with another's on the same connection."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class StoreBase:
    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        """`db` comes from open_db (autocommit mode, migrated); give the store a connection of its own."""
        if db.isolation_level is not None:
            raise ValueError("the store needs a connection in autocommit mode (isolation_level=None), as open_db opens")
        self._db = db
        self._lock = threading.RLock()
        self._clock = clock

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: everything inside commits together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one snapshot for several statements)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now
