"""The rate card: what each GPU-hour, kWh and contract costs, from a YAML file an operator edits.

Validated once on load into frozen dataclasses; unknown keys, duplicate keys,
negative or non-numeric money are errors naming file, line and field. Money is
`Decimal` parsed from the text as written, never through float. Format (see
deploy/config/ratecard.example.yaml):

    currency: USD                 # ISO 4217 code; default USD
    billing_increment_s: 1        # each allocation's GPU-time rounds up to this; default 1 (per second)
    prices:                       # per GPU-hour, by class then GPU model; "*" = any other model
      internal:  {"NVIDIA H200": "1.60"}   # internal transfer price (at cost)
      on_demand: {"NVIDIA H200": "3.50"}   # list price
      spot:      {"NVIDIA H200": "1.40"}
    energy_per_kwh: "0.09"        # one price for every class, or a mapping naming all four classes
    contracts:                    # terms per reserved contract_id
      acme-h200-2026:
        commitment_per_month: "958464.00"   # take-or-pay per calendar month, prorated by seconds
        included_gpu_hours_per_month: 368640 # optional for GPU contracts (default gpus x hours)
        nominal_gpu_w: 1000                  # power contracts: this, or included_gpu_hours_per_month
        overage_per_gpu_hour: "3.00"         # reserved usage beyond what is included
        sla_credit_per_gpu_hour: "5.20"      # per undelivered reserved GPU-hour
        sla_credit_cap_pct: 10               # credits never exceed this % of the period's commitment

Reserved usage has no entry under `prices`: it is covered by its contract's
commitment and beyond that rated at the contract's overage price.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.resources.abc import Traversable
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator

from neocloud import config
from neocloud.config import Schema, Text, exact_decimal, whole
from neocloud.scheduler.billing.currency import MINOR_UNITS

logger = logging.getLogger(__name__)

INTERNAL = "internal"
RESERVED = "reserved"
ON_DEMAND = "on_demand"
SPOT = "spot"
BILLABLE_CLASSES = (INTERNAL, RESERVED, ON_DEMAND, SPOT)  # the invoice's order
PRICED_CLASSES = (INTERNAL, ON_DEMAND, SPOT)  # rated per GPU-hour from `prices`
ANY_MODEL = "*"
MAX_INCREMENT_S = 3600


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """What one reserved contract costs; `where` ("ratecard.yaml line 40") is for messages."""

    contract_id: str
    commitment_per_month: Decimal
    overage_per_gpu_hour: Decimal
    sla_credit_per_gpu_hour: Decimal
    sla_credit_cap_pct: Decimal = Decimal(100)
    included_gpu_hours_per_month: Decimal | None = None
    nominal_gpu_w: Decimal | None = None
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RateCard:
    currency: str
    billing_increment_s: int
    prices: Mapping[str, Mapping[str, Decimal]]  # class -> GPU model (or "*") -> per GPU-hour
    energy_per_kwh: Mapping[str, Decimal]  # class -> per kWh, every billable class present
    contracts: Mapping[str, ContractTerms]
    source: str = field(default="ratecard", compare=False)
    # Which card this is: "r<sequence>-<12 hex of the text's SHA-256>" once applied to the
    # scheduler's store (scheduler/billing/live.py), "file-<12 hex>" as read from a file.
    version: str = field(default="", compare=False)

    def gpu_hour_price(self, job_class: str, gpu_model: str) -> Decimal | None:
        """The class's price for the model, else its "*" price, else None."""
        by_model = self.prices.get(job_class, {})
        price = by_model.get(gpu_model)
        return price if price is not None else by_model.get(ANY_MODEL)

    def energy_price(self, job_class: str) -> Decimal:
        return self.energy_per_kwh.get(job_class, Decimal(0))


def load_ratecard(path: str | Traversable) -> RateCard:
    """Read and validate the rate card at `path` (errors name this path)."""
    return parse_ratecard(config.read_text(path), source=str(path))


def parse_ratecard(text: str, source: str = "ratecard.yaml") -> RateCard:
    doc = config.parse(text, source)
    card = config.validate(_RateCardFile, doc)
    terms = card.contracts
    for contract_id, t in terms.items():
        if t.included_gpu_hours_per_month is not None and t.nominal_gpu_w is not None:
            raise doc.error(("contracts", contract_id, "nominal_gpu_w"), "give included_gpu_hours_per_month or "
                            "nominal_gpu_w, not both")  # fmt: skip
    energy = card.energy_per_kwh.model_dump() if card.energy_per_kwh else dict.fromkeys(BILLABLE_CLASSES, Decimal(0))
    prices = card.prices.model_dump(exclude={RESERVED})
    out = RateCard(
        currency=card.currency,
        billing_increment_s=card.billing_increment_s,
        prices=MappingProxyType({cls: MappingProxyType(prices[cls]) for cls in PRICED_CLASSES}),
        energy_per_kwh=MappingProxyType({cls: energy[cls] for cls in BILLABLE_CLASSES}),
        contracts=MappingProxyType(
            {
                contract_id: ContractTerms(
                    contract_id=contract_id,
                    where=f"{source} line {doc.line(('contracts', contract_id))}",
                    **t.model_dump(),
                )
                for contract_id, t in terms.items()
            }
        ),
        source=source,
        version="file-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
    )
    logger.info(
        "rate card %s: %s, %d contract(s), increment %d s", source, out.currency, len(terms), out.billing_increment_s
    )
    return out


# --- the file's schema (pydantic, at the edge only: parse_ratecard converts it once to the types above) ---


def _currency(code: str) -> str:
    if len(code) != 3 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise ValueError(f"{config.VALUE} is not an ISO 4217 code (three capital letters, e.g. USD)")
    if code not in MINOR_UNITS:  # refused when the card is read, not when a tenant's invoice is rated
        raise ValueError(f"{config.VALUE} is not an ISO 4217 currency with a minor unit (e.g. USD, EUR, JPY, KWD)")
    return code


def _gpu_model(model: str) -> str:
    """A GPU model is named as NVML reports it ("NVIDIA H200"), or "*"."""
    if model != model.strip() or not model or not model.isprintable():
        raise ValueError(f"GPU model {model!r} is not a valid name (no surrounding spaces or control characters)")
    if "*" in model and model != ANY_MODEL:
        raise ValueError(f'GPU model {model!r}: only a lone "*" matches any model (no patterns)')
    return model


def _some_model(by_model: dict[str, Decimal]) -> dict[str, Decimal]:
    if not by_model:
        raise ValueError('names no GPU model: give at least one, or "*" for any')
    return by_model


def _not_priced_per_hour(_: Any) -> None:
    raise ValueError("reserved usage is priced by its contract: set contracts.<id>.overage_per_gpu_hour instead")


def _one_price_for_all(value: Any) -> Any:
    """`energy_per_kwh: "0.09"` is that price for every class."""
    return value if isinstance(value, dict) else dict.fromkeys(BILLABLE_CLASSES, value)


def _contract_id(contract_id: str) -> str:
    if not contract_id.strip() or contract_id != contract_id.strip():
        raise ValueError(f"contract id {contract_id!r} is not valid")
    return contract_id


def _draws_power(watts: Decimal) -> Decimal:
    if watts <= 0:
        raise ValueError("must be above 0 (watts one GPU draws, host share included)")
    return watts


Money = Annotated[Decimal, exact_decimal()]
ByModel = Annotated[dict[Annotated[str, AfterValidator(_gpu_model)], Money], AfterValidator(_some_model)]


class _Prices(Schema):
    internal: ByModel
    on_demand: ByModel
    spot: ByModel
    reserved: Annotated[None, PlainValidator(_not_priced_per_hour)] = None


class _Energy(Schema):
    internal: Money
    reserved: Money
    on_demand: Money
    spot: Money


class _Terms(Schema):
    commitment_per_month: Money
    included_gpu_hours_per_month: Money | None = None
    nominal_gpu_w: Annotated[Money, AfterValidator(_draws_power)] | None = None
    overage_per_gpu_hour: Money
    sla_credit_per_gpu_hour: Money
    sla_credit_cap_pct: Annotated[Decimal, exact_decimal(maximum=Decimal(100))] = Decimal(100)


class _RateCardFile(Schema):
    currency: Annotated[Text, AfterValidator(_currency)] = "USD"
    billing_increment_s: Annotated[int, whole(1, MAX_INCREMENT_S)] = 1
    prices: _Prices
    energy_per_kwh: Annotated[_Energy | None, BeforeValidator(_one_price_for_all)] = None
    contracts: dict[Annotated[str, AfterValidator(_contract_id)], _Terms] = Field(default_factory=dict)
