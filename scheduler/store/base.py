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

_WRITE_COUNTER = "neocloud_count_write"


class StoreBase:
    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        """`db` comes from open_db (autocommit mode, migrated); give the store a connection of its own."""
        if db.isolation_level is not None:
            raise ValueError("the store needs a connection in autocommit mode (isolation_level=None), as open_db opens")
        self._db = db
        self._lock = threading.RLock()
        self._clock = clock
        self._write_counts: dict[str, int] = {}

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: everything inside commits together or not at all."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT may have rolled back already; a second ROLLBACK would hide its error.
                if self._db.in_transaction:
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

    def write_count(self, table: str) -> int:
        """How many rows of `table` this connection has inserted, updated or deleted (rolled-back
        writes included): something read from `table` may be stale once this number has moved, so a
        cache can check it without a query. The first call for a table installs TEMP triggers on this
        connection (nothing is written to the file). Writes through other connections are not
        counted: a cache should expire on a timer too."""
        count = self._write_counts.get(table)
        if count is not None:
            return count
        if not table.isidentifier():
            raise ValueError(f"{table!r} is not a table name")
        with self._lock:
            if table not in self._write_counts:
                if not self._write_counts:
                    self._db.create_function(_WRITE_COUNTER, 1, self._count_write)
                for op in ("INSERT", "UPDATE", "DELETE"):
                    self._db.execute(
                        f"CREATE TEMP TRIGGER IF NOT EXISTS {_WRITE_COUNTER}_{table}_{op.lower()} AFTER {op} ON {table}"
                        f" BEGIN SELECT {_WRITE_COUNTER}('{table}'); END"
                    )
                self._write_counts[table] = 0
            return self._write_counts[table]

    def _count_write(self, table: str) -> None:
        """Called by the triggers, on the writing thread, inside its transaction (so under the lock)."""
        self._write_counts[table] = self._write_counts.get(table, 0) + 1

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now
