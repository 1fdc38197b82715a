"""The rate card in force: the newest version applied to the store (`admin ratecard
apply`), else the one the scheduler started with (--rate-card). Every reader asks
for it at each use, so an applied version takes effect without a restart, in every
process that shares the store; each version is parsed once."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from neocloud.domain.errors import NeocloudError
from neocloud.scheduler.billing.books import Books
from neocloud.scheduler.billing.invoice import parse_period
from neocloud.scheduler.billing.ratecard import RateCard, parse_ratecard
from neocloud.scheduler.store.ratecards import StoredRateCard

logger = logging.getLogger(__name__)


def card_of(stored: StoredRateCard) -> RateCard:
    """A stored version as a card (errors name the version and its file)."""
    card = parse_ratecard(stored.text, source=f"rate card {stored.version} ({stored.source})")
    return dataclasses.replace(card, version=stored.version)


class LiveRateCard:
    def __init__(self, read_latest: Callable[[], StoredRateCard | None], startup: RateCard | None) -> None:
        """`read_latest`: the store's newest version (or None); `startup`: --rate-card's card."""
        self._read_latest = read_latest
        self._startup = startup
        self._lock = threading.Lock()
        self._cached: tuple[int, RateCard] | None = None

    def current(self) -> RateCard | None:
        return self.current_with_sequence()[1]

    def current_with_sequence(self) -> tuple[int, RateCard | None]:
        """The card in force and its stored sequence (0: the startup card, or none)."""
        stored = self._read_latest()
        if stored is None:
            return 0, self._startup
        with self._lock:
            if self._cached is None or self._cached[0] != stored.sequence:
                # A stored version passed this parser when it was applied, so it parses now.
                self._cached = (stored.sequence, card_of(stored))
                logger.info("rate card %s in force (from %s)", stored.version, stored.source)
            return self._cached


@dataclasses.dataclass(frozen=True, slots=True)
class InvoiceChange:
    """One tenant's open invoice under the card in force and under a new one."""

    tenant: str
    before: str  # total as text; "" where the card in force cannot rate it (or there is none)
    after: str
    currency: str
    error: str = ""  # why the new card cannot rate it


def open_invoice_changes(
    db: sqlite3.Connection, old: RateCard | None, new: RateCard, now: float
) -> tuple[str, list[InvoiceChange]]:
    """What `new` changes on the open (current-month, UTC) invoice of every tenant with usage
    or a contract this month, rated from the ledger as it stands; one tenant's failure to
    rate is that tenant's line, never the others'."""
    period = time.strftime("%Y-%m", time.gmtime(now))
    p = parse_period(period)
    out = []
    for tenant in Books(db, new).tenants(p.start, p.end):
        before = _total(db, old, tenant, period) if old is not None else ""
        try:
            after, error = str(Books(db, new).rate(tenant, period).total), ""
        except NeocloudError as e:
            after, error = "", str(e)
        out.append(InvoiceChange(tenant, before, after, new.currency, error))
    return period, out


def _total(db: sqlite3.Connection, card: RateCard, tenant: str, period: str) -> str:
    try:
        return str(Books(db, card).rate(tenant, period).total)
    except NeocloudError as e:
        logger.info("the rate card in force cannot rate %s's %s: %s", tenant, period, e)
        return ""
