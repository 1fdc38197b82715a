"""Rate-card versions as applied (`admin ratecard apply`): the text, its hash, who
applied it and when. Versions are never changed or deleted, so any invoice can be
rated again with the card it used; the newest is the card in force. The text is
parsed by billing (scheduler/billing/live.py): the store only keeps it."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MAX_RATECARD_BYTES = 1 << 20  # a card with thousands of contracts fits many times over
_COLUMNS = "sequence, sha256, source, body, applied_by, applied_at"


@dataclass(frozen=True, slots=True)
class StoredRateCard:
    sequence: int  # 1, 2, ... in the order applied
    sha256: str  # of the text as applied
    source: str  # the file's name, for messages
    text: str
    applied_by: str  # the token's name
    applied_at: float

    @property
    def version(self) -> str:
        """How operators and invoices name it: "r3-0123456789ab"."""
        return f"r{self.sequence}-{self.sha256[:12]}"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def latest(db: sqlite3.Connection) -> StoredRateCard | None:
    """The version in force, or None if none was ever applied."""
    row = db.execute(f"SELECT {_COLUMNS} FROM rate_cards ORDER BY sequence DESC LIMIT 1").fetchone()
    return None if row is None else StoredRateCard(*row)


def latest_sequence(db: sqlite3.Connection) -> int:
    """The sequence of the version in force (0: none), without reading its text."""
    return int(db.execute("SELECT COALESCE(MAX(sequence), 0) FROM rate_cards").fetchone()[0])


def history(db: sqlite3.Connection) -> list[StoredRateCard]:
    """Every version, oldest first."""
    return [StoredRateCard(*row) for row in db.execute(f"SELECT {_COLUMNS} FROM rate_cards ORDER BY sequence")]


def insert(db: sqlite3.Connection, text: str, source: str, actor: str, at: float) -> StoredRateCard:
    """Store a new version (the caller's write transaction makes it the one in force)."""
    sha = text_sha256(text)
    cursor = db.execute(
        "INSERT INTO rate_cards (sha256, source, body, applied_by, applied_at) VALUES (?, ?, ?, ?, ?)",
        (sha, source, text, actor, at),
    )
    stored = StoredRateCard(int(cursor.lastrowid or 0), sha, source, text, actor, at)
    logger.info("rate card %s applied from %s by %s", stored.version, source, actor)
    return stored
