"""The scheduler's SQLite store: opening it and migrating its schema.

WAL mode, full sync: the scheduler acknowledges telemetry only after it is
committed here, so what it acked survives a crash. Migrations are numbered and
applied in order; PRAGMA user_version records the last one applied.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

logger = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: telemetry ingest
    """
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        agent_version TEXT NOT NULL,
        backend TEXT NOT NULL,
        stream_epoch INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        dropped_samples_total INTEGER NOT NULL DEFAULT 0,
        first_seen_us INTEGER NOT NULL,
        last_seen_us INTEGER NOT NULL
    );
    CREATE TABLE gpus (
        uuid TEXT PRIMARY KEY,
        node_id TEXT NOT NULL REFERENCES nodes(node_id),
        gpu_index INTEGER NOT NULL,
        model TEXT NOT NULL,
        memory_total_bytes INTEGER NOT NULL,
        power_limit_mw INTEGER NOT NULL,
        energy_last_mj INTEGER,
        energy_last_us INTEGER NOT NULL DEFAULT 0,
        energy_total_mj INTEGER NOT NULL DEFAULT 0,
        energy_resets INTEGER NOT NULL DEFAULT 0,
        last_power_mw INTEGER NOT NULL DEFAULT 0,
        xid_errors_total INTEGER NOT NULL DEFAULT 0,
        unhealthy_reason TEXT
    );
    CREATE INDEX gpus_by_node ON gpus(node_id);
    """,
)


class StoreError(RuntimeError):
    """The store cannot be opened or is newer than this scheduler."""


def open_db(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the store at `path`."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open the store at {path}: {e}") from e
    migrate(db, path)
    return db


def migrate(db: sqlite3.Connection, path: str | Path) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the store at {path} has schema version {version}, newer than this scheduler's "
            f"{len(MIGRATIONS)}: upgrade neocloud before starting it on this store"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        logger.info("store %s migrated to schema version %d", path, number)
