"""The agent's on-disk spool of batches the scheduler has not acknowledged.

SQLite in WAL mode: a batch is durable before it is sent, and is deleted only
when the scheduler acknowledges it, so neither a cut connection nor an agent
restart loses it. The spool is bounded: past `max_bytes` the oldest batches
lose their raw samples (counted), but energy-counter readings and health
events are never dropped, because billing rests on them.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from neocloud.agent.convert import strip_raw_samples
from neocloud.v1 import telemetry_pb2 as pb

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    stripped INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    batches: int
    bytes: int
    dropped_samples_total: int
    rejected_batches_total: int


class Spool:
    def __init__(self, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool bound must be positive, not {max_bytes}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.epoch = self._meta_default("epoch", secrets.randbits(63) or 1)
        self._next_seq = self._meta_default("next_seq", 1)
        self._dropped = self._meta_default("dropped_samples_total", 0)
        self._rejected = self._meta_default("rejected_batches_total", 0)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM batches").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        self._over_bound = False
        logger.info(
            "spool %s: epoch %d, %d unacknowledged batches (%d bytes)", self.path, self.epoch, self._count, self._bytes
        )

    def _meta_default(self, key: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return int(row[0])
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, default))
        return default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))

    def append(self, batch: pb.Batch) -> int:
        """Give the batch the next sequence number and store it durably."""
        with self._lock:
            seq = self._next_seq
            batch.stream_epoch = self.epoch
            batch.seq = seq
            batch.dropped_samples_total = self._dropped
            data = batch.SerializeToString()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT INTO batches (seq, data) VALUES (?, ?)", (seq, data))
                self._set_meta("next_seq", seq + 1)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._next_seq = seq + 1
            self._count += 1
            self._bytes += len(data)
            if self._bytes > self._max_bytes:
                self._enforce_bound()
            self._appended.notify_all()
            return seq

    def _enforce_bound(self) -> None:
        rows = self._db.execute("SELECT seq, data FROM batches WHERE stripped = 0 ORDER BY seq").fetchall()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for seq, data in rows:
                if self._bytes <= self._max_bytes:
                    break
                batch = pb.Batch.FromString(data)
                dropped = strip_raw_samples(batch)
                smaller = batch.SerializeToString()
                self._db.execute("UPDATE batches SET data = ?, stripped = 1 WHERE seq = ?", (smaller, seq))
                self._bytes -= len(data) - len(smaller)
                self._dropped += dropped
            self._set_meta("dropped_samples_total", self._dropped)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if not self._over_bound:
            # Once per episode: the spool stays over its bound until acks drain it.
            self._over_bound = True
            logger.warning(
                "spool %s reached its %d-byte bound: dropping the oldest raw samples (energy readings kept); "
                "%d dropped so far",
                self.path,
                self._max_bytes,
                self._dropped,
            )
            if self._bytes > self._max_bytes:
                logger.error("spool %s holds only energy readings and still exceeds its bound; keeping them", self.path)

    def pending(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Serialized batches with seq > after_seq, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, data FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [(int(seq), bytes(data)) for seq, data in rows]

    def wait_for_append(self, after_seq: int, timeout_s: float) -> bool:
        """Block until a batch with seq > after_seq exists (or timeout)."""
        with self._appended:
            return self._appended.wait_for(lambda: self._next_seq - 1 > after_seq, timeout_s)

    def ack(self, epoch: int, acked_seq: int, rejected: int = 0) -> int:
        """Forget every batch up to acked_seq; returns how many were removed."""
        if epoch != self.epoch:
            logger.warning("ignoring an ack for epoch %d (ours is %d)", epoch, self.epoch)
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                gone = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM batches WHERE seq <= ?", (acked_seq,)
                ).fetchone()
                self._db.execute("DELETE FROM batches WHERE seq <= ?", (acked_seq,))
                if rejected:
                    self._rejected += rejected
                    self._set_meta("rejected_batches_total", self._rejected)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= int(gone[0])
            self._bytes -= int(gone[1])
            if self._over_bound and self._bytes < self._max_bytes:
                self._over_bound = False
                logger.info("spool back under its bound; %d raw samples were dropped in all", self._dropped)
            return int(gone[0])

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(self._count, self._bytes, self._dropped, self._rejected)

    def close(self) -> None:
        with self._lock:
            self._db.close()
