"""The operators' audit trail: one row per thing an operator did (who, when, what,
to which subject, why), written in the same transaction as the change itself."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdminEvent:
    """One line of the operators' audit trail."""

    event_id: int
    at: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    reason: str


def audit(
    db: sqlite3.Connection, at: float, actor: str, action: str, subject: str, detail: dict[str, Any], reason: str
) -> AdminEvent:
    """Record one event inside the caller's write transaction."""
    cursor = db.execute(
        "INSERT INTO admin_events (at, actor, action, subject, detail, reason) VALUES (?, ?, ?, ?, ?, ?)",
        (at, actor, action, subject, json.dumps(detail, sort_keys=True), reason),
    )
    return AdminEvent(int(cursor.lastrowid or 0), at, actor, action, subject, detail, reason)
