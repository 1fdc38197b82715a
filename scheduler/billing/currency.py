"""Money in a currency: ISO 4217 minor units and the one rounding rule invoices use.

A currency's minor unit is how many decimals its smallest coin has (ISO 4217,
list one): JPY 0, USD and EUR 2, KWD 3. Every invoice amount is rounded to its
currency's minor unit, half away from zero (0.125 USD -> 0.13, -0.125 -> -0.13;
the rounding a customer's calculator or spreadsheet ROUND() does), never to a
fixed 2 decimals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType

logger = logging.getLogger(__name__)

_BY_PLACES = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    2: "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF"
    " CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG"
    " HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR"
    " MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK"
    " SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD"
    " YER ZAR ZMW ZWG",
}
# ISO 4217 code -> decimals of its minor unit (currencies in circulation; funds and metals left out).
MINOR_UNITS: Mapping[str, int] = MappingProxyType(
    {code: places for places, codes in _BY_PLACES.items() for code in codes.split()}
)


class UnknownCurrencyError(LookupError):
    """A currency code that is not in the ISO 4217 table above."""


def minor_units(currency: str) -> int:
    """Decimals of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    places = MINOR_UNITS.get(currency)
    if places is None:
        raise UnknownCurrencyError(
            f"currency {currency!r} is not an ISO 4217 code with a minor unit (e.g. USD, EUR, JPY, KWD)"
        )
    return places


def round_half_away(value: Fraction, places: int) -> Decimal:
    """The exact value rounded to `places` decimals, a half away from zero."""
    scaled = abs(value) * 10**places
    whole = int(scaled + Fraction(1, 2))  # floor, as scaled >= 0
    return Decimal(-whole if value < 0 else whole).scaleb(-places)


def money(value: Fraction, currency: str) -> Decimal:
    """An exact amount rounded to the currency's minor unit, a half away from zero."""
    return round_half_away(value, minor_units(currency))


def zero(currency: str) -> Decimal:
    """0 written to the currency's minor unit ("0.00" USD, "0" JPY, "0.000" KWD)."""
    return Decimal(0).scaleb(-minor_units(currency))
