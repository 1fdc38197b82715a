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
    # 2: jobs, tenants, tokens, contracts, allocations, settings, cordons (times are Unix seconds)
    """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        weight REAL NOT NULL DEFAULT 1.0 CHECK (weight > 0),
        created_at REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        tenant TEXT REFERENCES tenants(name),
        role TEXT NOT NULL CHECK (role IN ('operator', 'internal', 'tenant')),
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        CHECK ((role = 'tenant') = (tenant IS NOT NULL))
    );
    CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens(name) WHERE revoked_at IS NULL;
    CREATE TABLE contracts (
        contract_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        gpus INTEGER NOT NULL DEFAULT 0,
        power_w REAL NOT NULL DEFAULT 0,
        gpu_model TEXT,
        start REAL NOT NULL,
        end REAL NOT NULL,
        created_at REAL NOT NULL,
        CHECK (start < end),
        CHECK ((gpus > 0) <> (power_w > 0))
    );
    CREATE INDEX contracts_by_tenant ON contracts(tenant);
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        client_request_id TEXT NOT NULL,
        job_class TEXT NOT NULL CHECK (job_class IN ('internal', 'reserved', 'on_demand', 'spot')),
        gpus INTEGER NOT NULL CHECK (gpus BETWEEN 1 AND 4096),
        gpus_per_node INTEGER NOT NULL CHECK (gpus_per_node BETWEEN 1 AND 8),
        gpu_model TEXT,
        command TEXT,
        entrypoint TEXT,
        env TEXT NOT NULL DEFAULT '{}',
        grace_s REAL NOT NULL,
        max_runtime_s REAL,
        requeue_on_preempt INTEGER NOT NULL DEFAULT 1,
        contract_id TEXT,
        state TEXT NOT NULL
            CHECK (state IN ('queued', 'running', 'preempting', 'succeeded', 'failed', 'cancelled')),
        submitted_at REAL NOT NULL,
        queue_position REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        requeues INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        message TEXT NOT NULL DEFAULT '',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        last_checkpoint_at REAL,
        preemption_notice_at REAL,
        UNIQUE (tenant, client_request_id),
        CHECK ((command IS NULL) <> (entrypoint IS NULL))
    );
    CREATE INDEX jobs_by_state ON jobs(state, queue_position);
    CREATE INDEX jobs_by_tenant ON jobs(tenant, submitted_at);
    CREATE INDEX jobs_by_contract ON jobs(contract_id) WHERE contract_id IS NOT NULL;
    CREATE TABLE job_events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs(job_id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL
    );
    CREATE INDEX job_events_by_job ON job_events(job_id, event_id);
    CREATE TABLE allocations (
        allocation_id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(job_id),
        tenant TEXT NOT NULL,
        job_class TEXT NOT NULL,
        node_id TEXT NOT NULL,
        gpu_uuids TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL,
        end_reason TEXT,
        CHECK (end IS NULL OR end >= start)
    );
    CREATE INDEX allocations_by_job ON allocations(job_id);
    CREATE INDEX allocations_open ON allocations(node_id) WHERE end IS NULL;
    CREATE INDEX allocations_by_end ON allocations(end);
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE node_cordons (
        node_id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 3: metering (what the ledger is computed from, and the ledger itself)
    """
    CREATE TABLE meter_cells (
        uuid TEXT NOT NULL,
        owner TEXT NOT NULL,
        hour INTEGER NOT NULL,
        energy_mj REAL NOT NULL,
        util_sum INTEGER NOT NULL,
        util_count INTEGER NOT NULL,
        peak_power_mw INTEGER NOT NULL,
        memory_peak_bytes INTEGER NOT NULL,
        PRIMARY KEY (uuid, owner, hour)
    ) WITHOUT ROWID;
    CREATE INDEX meter_cells_by_hour ON meter_cells(hour);
    CREATE TABLE meter_watermarks (
        uuid TEXT PRIMARY KEY,
        attributed_to_us INTEGER NOT NULL,
        attributed_total_mj REAL NOT NULL
    );
    CREATE TABLE meter_dirty (
        hour INTEGER PRIMARY KEY,
        stamp INTEGER NOT NULL  -- new at every marking: the ledger clears a mark only if it is the one it saw
    );
    CREATE TRIGGER allocation_opened AFTER INSERT ON allocations BEGIN
        INSERT OR REPLACE INTO meter_dirty (hour, stamp)
            SELECT hour, random() FROM meter_hours WHERE hour >= CAST(NEW.start / 3600 AS INTEGER) * 3600
            UNION SELECT CAST(NEW.start / 3600 AS INTEGER) * 3600, random();
    END;
    -- An allocation closed at an earlier time (an exit or a node loss reported late) or moved to
    -- other GPUs changes every hour metered since.
    CREATE TRIGGER allocation_closed AFTER UPDATE OF end ON allocations WHEN NEW.end IS NOT NULL BEGIN
        INSERT OR REPLACE INTO meter_dirty (hour, stamp)
            SELECT hour, random() FROM meter_hours WHERE hour >= CAST(NEW.end / 3600 AS INTEGER) * 3600
            UNION SELECT CAST(NEW.end / 3600 AS INTEGER) * 3600, random();
    END;
    CREATE TRIGGER allocation_moved AFTER UPDATE OF gpu_uuids ON allocations BEGIN
        INSERT OR REPLACE INTO meter_dirty (hour, stamp)
            SELECT hour, random() FROM meter_hours WHERE hour >= CAST(NEW.start / 3600 AS INTEGER) * 3600;
    END;
    CREATE TABLE usage (
        usage_id TEXT NOT NULL,
        hour INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        job_id TEXT NOT NULL,
        allocation_id TEXT NOT NULL,
        gpu_model TEXT NOT NULL,
        job_class TEXT NOT NULL,
        contract_id TEXT,
        gpu_ms INTEGER NOT NULL CHECK (gpu_ms >= 0),
        energy_mj INTEGER NOT NULL CHECK (energy_mj >= 0),
        util_gpu_ms INTEGER NOT NULL DEFAULT 0,
        peak_power_mw INTEGER NOT NULL DEFAULT 0,
        memory_peak_bytes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (hour, usage_id)
    ) WITHOUT ROWID;
    CREATE INDEX usage_by_tenant ON usage(tenant, hour);
    CREATE TABLE meter_hours (
        hour INTEGER PRIMARY KEY,
        metered_to REAL NOT NULL,
        wall_gpu_ms INTEGER NOT NULL
    );
    CREATE TABLE contract_shortfalls (
        contract_id TEXT NOT NULL,
        hour INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        undelivered_gpu_ms INTEGER NOT NULL CHECK (undelivered_gpu_ms >= 0),
        PRIMARY KEY (contract_id, hour)
    );
    CREATE TABLE invoices (
        tenant TEXT NOT NULL,
        period TEXT NOT NULL,
        issued_at REAL NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (tenant, period)
    );
    """,
    # 4: the operators' audit trail (who did what to which subject, when and why)
    """
    CREATE TABLE admin_events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX admin_events_by_subject ON admin_events(subject, event_id);
    """,
    # 5: the controller's intents and the GPUs awaiting NVML's proof (store/intents.py)
    """
    CREATE TABLE intents (
        job_id TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('start', 'stop')),
        at REAL NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (job_id, action)
    );
    CREATE TABLE cleanups (
        job_id TEXT PRIMARY KEY,
        gpu_uuids TEXT NOT NULL,
        pids TEXT NOT NULL,
        released_us INTEGER,
        holder TEXT,
        pid_namespaces TEXT NOT NULL DEFAULT '[]'
    );
    """,
    # 6: job names, CPU and memory requests, dependencies (store/deps.py) and arrays (store/arrays.py)
    """
    ALTER TABLE jobs ADD COLUMN name TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN cpus INTEGER NOT NULL DEFAULT 0 CHECK (cpus BETWEEN 0 AND 1024);
    ALTER TABLE jobs ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0 CHECK (memory_bytes >= 0);
    ALTER TABLE jobs ADD COLUMN after_ok TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN array_spec TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN array_job_id TEXT;
    ALTER TABLE jobs ADD COLUMN array_index INTEGER;
    CREATE INDEX jobs_by_name ON jobs(tenant, name) WHERE name != '';
    CREATE INDEX jobs_by_array ON jobs(array_job_id, array_index) WHERE array_job_id IS NOT NULL;
    CREATE TABLE job_waits (
        job_id TEXT NOT NULL REFERENCES jobs(job_id),
        after_job_id TEXT NOT NULL REFERENCES jobs(job_id),
        PRIMARY KEY (job_id, after_job_id)
    ) WITHOUT ROWID;
    CREATE INDEX job_waits_by_parent ON job_waits(after_job_id);
    """,
    # 7: rate-card versions, kept for good; the newest is the one in force (store/ratecards.py)
    """
    CREATE TABLE rate_cards (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        body TEXT NOT NULL,
        applied_by TEXT NOT NULL,
        applied_at REAL NOT NULL
    );
    """,
    # 8: tokens expire; a rotated token is superseded by a new one of its name and lives out its grace
    """
    ALTER TABLE api_tokens ADD COLUMN expires_at REAL;
    ALTER TABLE api_tokens ADD COLUMN superseded_at REAL;
    DROP INDEX api_tokens_active_name;
    CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens(name) WHERE revoked_at IS NULL AND superseded_at IS NULL;
    """,
    # 9: internal teams are tenants of class internal: their work is the lab's, their usage their own
    """
    ALTER TABLE tenants ADD COLUMN internal INTEGER NOT NULL DEFAULT 0 CHECK (internal IN (0, 1));
    """,
    # 10: a job may run in a workdir its tenant uploaded (ArtifactService), named by its digest
    """
    ALTER TABLE jobs ADD COLUMN workdir_digest TEXT NOT NULL DEFAULT '';
    """,
    # 11: the sandbox each rank ran in (executor/sandbox.py's proof, JSON), for the tenant to audit
    """
    ALTER TABLE allocations ADD COLUMN sandbox TEXT NOT NULL DEFAULT '';
    """,
    # 12: a job may ask for a private Ray of its own (submit --ray)
    """
    ALTER TABLE jobs ADD COLUMN ray INTEGER NOT NULL DEFAULT 0 CHECK (ray IN (0, 1));
    """,
    # 13: each tenant's own sandbox uid (store/uids.py), given once; existing tenants in name order
    """
    ALTER TABLE tenants ADD COLUMN uid_offset INTEGER CHECK (uid_offset BETWEEN 1 AND 65535);
    UPDATE tenants SET uid_offset = 1 + (SELECT COUNT(*) FROM tenants AS t WHERE t.name < tenants.name);
    CREATE UNIQUE INDEX tenants_uid_offset ON tenants(uid_offset);
    """,
)


class StoreError(RuntimeError):
    """The store cannot be opened, is missing, or is newer than this scheduler."""


class StoreMissingError(StoreError):
    """There is no store at the path and creating one was not asked for."""


def open_db(path: str | Path, create: bool = True) -> sqlite3.Connection:
    """Open and migrate the store at `path`. A missing store is created only with
    `create`: a mistyped path must not become a new, empty site."""
    if str(path) != ":memory:":
        where = Path(path).absolute()
        if not create and not where.exists():
            raise StoreMissingError(
                f"no store at {where}: check --db, or pass --init to create a new, empty site there"
            )
        where.parent.mkdir(parents=True, exist_ok=True)
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
            for statement in _statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        logger.info("store %s migrated to schema version %d", path, number)


def _statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger's body holds semicolons of its own."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise StoreError(f"incomplete SQL statement in a migration: {pending.strip()[:80]}")
    return statements
