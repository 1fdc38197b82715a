"""Which rate card priced an invoice line: a hash of the card's content.

Two cards with the same prices and terms have the same version wherever they
were loaded from (the file name and line numbers are left out), and any change
to a price, term, currency or increment gives another, so an invoice line's
`rate_version` says exactly which prices it used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from decimal import Decimal

from neocloud.scheduler.billing.ratecard import RateCard

logger = logging.getLogger(__name__)

VERSION_PREFIX = "sha256:"
_HEX_DIGITS = 16


def card_version(card: RateCard) -> str:
    """ "sha256:" and the first 16 hex digits of the card's canonical JSON (sorted keys, Decimals as written)."""
    content = {
        "currency": card.currency,
        "billing_increment_s": card.billing_increment_s,
        "prices": {cls: dict(by_model) for cls, by_model in card.prices.items()},
        "energy_per_kwh": dict(card.energy_per_kwh),
        "contracts": {
            cid: {k: v for k, v in asdict(terms).items() if k != "where"} for cid, terms in card.contracts.items()
        },
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=_plain)
    return VERSION_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:_HEX_DIGITS]


def _plain(value: object) -> str:
    """A Decimal as its value ("1.40" and "1.4" are one price), without exponent notation."""
    if not isinstance(value, Decimal):
        raise TypeError(f"{type(value).__name__} in a rate card")
    return format(value.normalize(), "f")
