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
from pathlib import Path
from types import MappingProxyType

from neocloud.scheduler.billing.currency import MINOR_UNITS
from neocloud.scheduler.billing.yamlnodes import ConfigError, Node, compose

logger = logging.getLogger(__name__)

INTERNAL = "internal"
RESERVED = "reserved"
ON_DEMAND = "on_demand"
SPOT = "spot"
BILLABLE_CLASSES = (INTERNAL, RESERVED, ON_DEMAND, SPOT)  # the invoice's order
PRICED_CLASSES = (INTERNAL, ON_DEMAND, SPOT)  # rated per GPU-hour from `prices`
ANY_MODEL = "*"
MAX_INCREMENT_S = 3600

_TOP_KEYS = frozenset({"currency", "billing_increment_s", "prices", "energy_per_kwh", "contracts"})
_TERMS_KEYS = frozenset(
    {
        "commitment_per_month",
        "included_gpu_hours_per_month",
        "nominal_gpu_w",
        "overage_per_gpu_hour",
        "sla_credit_per_gpu_hour",
        "sla_credit_cap_pct",
    }
)
_TERMS_REQUIRED = frozenset({"commitment_per_month", "overage_per_gpu_hour", "sla_credit_per_gpu_hour"})


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
    path = Path(path) if isinstance(path, str) else path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), 0, "", f"cannot read: {e.strerror or e}") from e
    return parse_ratecard(text, source=str(path))


def parse_ratecard(text: str, source: str = "ratecard.yaml") -> RateCard:
    root = compose(text, source)
    top = root.fields(_TOP_KEYS, required=frozenset({"prices"}))
    currency = _currency(top["currency"]) if "currency" in top else "USD"
    increment = (
        top["billing_increment_s"].integer(minimum=1, maximum=MAX_INCREMENT_S) if "billing_increment_s" in top else 1
    )
    prices = _prices(top["prices"])
    energy = _energy(top["energy_per_kwh"]) if "energy_per_kwh" in top else dict.fromkeys(BILLABLE_CLASSES, Decimal(0))
    contracts = _contracts(top["contracts"]) if "contracts" in top else {}
    card = RateCard(
        currency=currency,
        billing_increment_s=increment,
        prices=MappingProxyType({cls: MappingProxyType(by_model) for cls, by_model in prices.items()}),
        energy_per_kwh=MappingProxyType(energy),
        contracts=MappingProxyType(contracts),
        source=source,
        version="file-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12],
    )
    logger.info("rate card %s: %s, %d contract(s), increment %d s", source, currency, len(contracts), increment)
    return card


def _currency(node: Node) -> str:
    code = node.text()
    if len(code) != 3 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise node.error(f"{node.shown()} is not an ISO 4217 code (three capital letters, e.g. USD)")
    if code not in MINOR_UNITS:  # refused when the card is read, not when a tenant's invoice is rated
        raise node.error(f"{node.shown()} is not an ISO 4217 currency with a minor unit (e.g. USD, EUR, JPY, KWD)")
    return code


def _prices(node: Node) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for cls, by_model in node.items(frozenset((*PRICED_CLASSES, RESERVED))):
        if cls == RESERVED:
            raise by_model.error(
                "reserved usage is priced by its contract: set contracts.<id>.overage_per_gpu_hour instead"
            )
        models: dict[str, Decimal] = {}
        for model, price in by_model.items():
            _check_model(price, model)
            models[model] = price.decimal()
        if not models:
            raise by_model.error('names no GPU model: give at least one, or "*" for any')
        out[cls] = models
    missing = [cls for cls in PRICED_CLASSES if cls not in out]
    if missing:
        raise node.error(f"missing class {missing[0]!r}: every class needs a price per GPU-hour")
    return out


def _check_model(node: Node, model: str) -> None:
    """A GPU model is named as NVML reports it ("NVIDIA H200"), or "*"."""
    if model != model.strip() or not model or not model.isprintable():
        raise node.error(f"GPU model {model!r} is not a valid name (no surrounding spaces or control characters)")
    if "*" in model and model != ANY_MODEL:
        raise node.error(f'GPU model {model!r}: only a lone "*" matches any model (no patterns)')


def _energy(node: Node) -> dict[str, Decimal]:
    if not node.is_mapping():
        price = node.decimal()
        return dict.fromkeys(BILLABLE_CLASSES, price)
    out = {cls: price.decimal() for cls, price in node.items(frozenset(BILLABLE_CLASSES))}
    missing = [cls for cls in BILLABLE_CLASSES if cls not in out]
    if missing:
        # A forgotten class would silently bill its energy at zero.
        raise node.error(f"missing class {missing[0]!r}: name every class, or give one price for all")
    return out


def _contracts(node: Node) -> dict[str, ContractTerms]:
    out: dict[str, ContractTerms] = {}
    for contract_id, terms in node.items():
        if not contract_id.strip() or contract_id != contract_id.strip():
            raise terms.error(f"contract id {contract_id!r} is not valid")
        out[contract_id] = _terms(contract_id, terms)
    return out


def _terms(contract_id: str, node: Node) -> ContractTerms:
    f = node.fields(_TERMS_KEYS, required=_TERMS_REQUIRED)
    if "included_gpu_hours_per_month" in f and "nominal_gpu_w" in f:
        raise f["nominal_gpu_w"].error("give included_gpu_hours_per_month or nominal_gpu_w, not both")
    nominal = f["nominal_gpu_w"].decimal() if "nominal_gpu_w" in f else None
    if nominal is not None and nominal <= 0:
        raise f["nominal_gpu_w"].error("must be above 0 (watts one GPU draws, host share included)")
    cap = f["sla_credit_cap_pct"].decimal(maximum=Decimal(100)) if "sla_credit_cap_pct" in f else Decimal(100)
    included = f.get("included_gpu_hours_per_month")
    return ContractTerms(
        contract_id=contract_id,
        commitment_per_month=f["commitment_per_month"].decimal(),
        overage_per_gpu_hour=f["overage_per_gpu_hour"].decimal(),
        sla_credit_per_gpu_hour=f["sla_credit_per_gpu_hour"].decimal(),
        sla_credit_cap_pct=cap,
        included_gpu_hours_per_month=included.decimal() if included is not None else None,
        nominal_gpu_w=nominal,
        where=f"{node.source} line {node.line}",
    )
