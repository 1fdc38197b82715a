"""Each tenant's own sandbox uid: its offset in the nodes' tenant uid range, given once, when the tenant
is created, and never reused. A hash of the name (what the executor falls back to when used without a
store, in tests and benchmarks) collides: with 65,536 uids, two of 300 tenants share one about half the
time, and a shared uid is a shared identity on every node (files, ports bound with SO_REUSEPORT).

Offset 0 is the lab's own work (the reserved tenant "internal", which has no row); tenants get 1, 2, ...
"""

from __future__ import annotations

import sqlite3

from neocloud.domain.errors import ResourceExhaustedError
from neocloud.scheduler.policy.types import INTERNAL_TENANT

# The nodes' range holds 65,536 uids (executor/sandbox.py UID_COUNT); offset 0 is the lab's.
MAX_OFFSET = 65_535


def assign(db: sqlite3.Connection) -> int:
    """The next tenant's offset; call inside the write transaction that inserts it."""
    (last,) = db.execute("SELECT COALESCE(MAX(uid_offset), 0) FROM tenants").fetchone()
    offset = int(last) + 1
    if offset > MAX_OFFSET:
        raise ResourceExhaustedError(f"every sandbox uid of the range is given ({MAX_OFFSET} tenants)")
    return offset


def offset(db: sqlite3.Connection, tenant: str) -> int | None:
    """`tenant`'s offset; None for a tenant that does not exist."""
    if tenant == INTERNAL_TENANT:
        return 0
    row = db.execute("SELECT uid_offset FROM tenants WHERE name = ?", (tenant,)).fetchone()
    return None if row is None else int(row[0])
