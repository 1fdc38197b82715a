"""An invoice and its lines, the billing period, and the rounding rules money follows.

Rounding (the one place it happens):
- Intermediate quantities and products are exact rationals (`Fraction`): GPU-ms,
  mJ and seconds are integers and prices are `Decimal`, so nothing is lost
  before the end and no float ever touches money.
- Each line's amount is its exact value rounded once to the currency's minor
  unit (ISO 4217: USD 2 decimals, JPY 0, KWD 3), half away from zero
  (currency.py). Subtotal and total are sums of the rounded line amounts, so
  they always add up to what the lines show.
- A line's quantity is shown to 6 decimals (GPU-hours, kWh, months), half away
  from zero; the amount comes from the exact quantity, not the shown one.
"""

from __future__ import annotations

import calendar
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from neocloud.domain.errors import FailedPreconditionError, InvalidArgumentError
from neocloud.scheduler.billing.currency import round_half_away, zero

logger = logging.getLogger(__name__)

MS_PER_HOUR = 3_600_000
MJ_PER_KWH = 3_600_000_000  # 1 kWh = 3.6 MJ = 3.6e9 mJ
QUANTITY_PLACES = 6


class Reason(StrEnum):
    """Why a tenant could not be rated: the `reason` label of neocloud_billing_errors_total."""

    NO_TERMS = "no_terms"  # a contract without (usable) terms in the rate card
    NO_PRICE = "no_price"  # a class or GPU model the rate card has no price for
    BAD_USAGE = "bad_usage"  # a usage or shortfall row that cannot be billed as it is
    CURRENCY = "currency"  # a currency without an ISO 4217 minor unit, or not the issued invoice's
    INVALID = "invalid"  # inputs the caller put together wrongly (adjustments)
    ERROR = "error"  # an unexpected exception while rating (a bug): see the log


class BillingError(FailedPreconditionError):
    """The inputs cannot be rated as given (a price, contract or term is missing); the message says which."""

    def __init__(self, message: str, reason: Reason = Reason.INVALID) -> None:
        super().__init__(message)
        self.reason = reason


class LineKind(StrEnum):
    COMMITMENT = "commitment"  # take-or-pay, per contract
    USAGE = "usage"  # GPU-hours by class and model
    OVERAGE = "overage"  # reserved GPU-hours beyond what a contract includes
    ENERGY = "energy"  # kWh pass-through by class
    SLA_CREDIT = "sla_credit"  # negative: reserved capacity not delivered
    ADJUSTMENT = "adjustment"  # a correction to a closed period


KIND_ORDER = {kind: i for i, kind in enumerate(LineKind)}


@dataclass(frozen=True, slots=True)
class Line:
    kind: LineKind
    description: str
    quantity: Decimal  # in `unit`, shown to 6 decimals
    unit: str  # "GPU-h", "kWh", "month"
    unit_price: Decimal
    amount: Decimal  # in the invoice's currency, to its minor unit
    job_class: str = ""
    gpu_model: str = ""
    contract_id: str = ""
    ref_period: str = ""  # adjustments: the closed period they correct
    ref_kind: str = ""  # adjustments: the kind of line they correct
    rate_version: str = ""  # RateCard.version of the card that priced the line; not part of the key

    @property
    def key(self) -> tuple[str, ...]:
        """Identifies the line across recomputations of one period (see adjustments.py)."""
        return (self.kind.value, self.job_class, self.gpu_model, self.contract_id, self.ref_period, self.ref_kind)


@dataclass(frozen=True, slots=True)
class Invoice:
    tenant: str
    period: str  # "YYYY-MM", UTC
    currency: str
    lines: tuple[Line, ...]

    @property
    def subtotal(self) -> Decimal:
        """This period's own lines (credits included), before adjustments to earlier periods."""
        return sum((ln.amount for ln in self.lines if ln.kind is not LineKind.ADJUSTMENT), zero(self.currency))

    @property
    def adjustments(self) -> Decimal:
        return sum((ln.amount for ln in self.lines if ln.kind is LineKind.ADJUSTMENT), zero(self.currency))

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.adjustments


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar month in UTC: [start, end) in Unix seconds."""

    name: str
    start: int
    end: int

    @property
    def seconds(self) -> int:
        return self.end - self.start


_PERIOD = re.compile(r"(\d{4})-(\d{2})")


def parse_period(name: str) -> Period:
    match = _PERIOD.fullmatch(name)
    if match is None:
        raise InvalidArgumentError(f"period {name!r} is not a month: write YYYY-MM, e.g. 2026-11")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12 or year < 1970:
        raise InvalidArgumentError(f"period {name!r} is not a month: write YYYY-MM, e.g. 2026-11")
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = start + calendar.monthrange(year, month)[1] * 86_400  # not via year 10000, which no date holds
    return Period(name, start, end)


def shown(value: Fraction) -> Decimal:
    """A quantity rounded to 6 decimals, half away from zero, for display."""
    return round_half_away(value, QUANTITY_PLACES)


def exact(value: Decimal | float | int) -> Fraction:
    """A Decimal, int or float (e.g. a contract's Unix time) as the exact rational it holds."""
    return Fraction(value)
