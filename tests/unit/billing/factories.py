"""Builders for billing tests: usage rows, contracts and small rate cards in a few words."""

from __future__ import annotations

from pathlib import Path

from neocloud.scheduler.billing.ratecard import RateCard, parse_ratecard
from neocloud.scheduler.metering.usage import UsageRow, usage_id
from neocloud.scheduler.store.records import ContractRecord

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_CARD = REPO / "deploy" / "config" / "ratecard.example.yaml"

H200 = "NVIDIA H200"
H100 = "NVIDIA H100"
NOV = "2026-11"
NOV_START = 1793491200  # 2026-11-01T00:00:00Z
DEC_START = 1796083200  # 2026-12-01T00:00:00Z
NOV_S = DEC_START - NOV_START  # 30 days
HOUR_MS = 3_600_000
KWH_MJ = 3_600_000_000

CARD_YAML = """\
currency: USD
prices:
  internal: {"NVIDIA H200": "1.65", "*": "1.00"}
  on_demand: {"NVIDIA H200": "3.50", "NVIDIA H100": "2.50"}
  spot: {"NVIDIA H200": "1.40"}
energy_per_kwh:
  internal: "0"
  reserved: "0.10"
  on_demand: "0.10"
  spot: "0.10"
contracts:
  c-gpu:
    commitment_per_month: "10000.00"
    overage_per_gpu_hour: "3.00"
    sla_credit_per_gpu_hour: "5.00"
    sla_credit_cap_pct: 10
  c-power:
    commitment_per_month: "20000.00"
    nominal_gpu_w: 1000
    overage_per_gpu_hour: "2.00"
    sla_credit_per_gpu_hour: "4.00"
"""


def card(extra: str = "", *, increment_s: int | None = None, text: str = CARD_YAML) -> RateCard:
    """The test card, with `extra` YAML appended (e.g. more contracts) and an increment put first."""
    head = f"billing_increment_s: {increment_s}\n" if increment_s is not None else ""
    return parse_ratecard(head + text + extra)


def row(
    allocation: str,
    job_class: str = "on_demand",
    *,
    hour: int = 0,
    gpu_ms: int = HOUR_MS,
    energy_mj: int = 0,
    tenant: str = "acme",
    model: str = H200,
    contract: str | None = None,
    start: int = NOV_START,
) -> UsageRow:
    """A row `hour` hours after `start` (November 2026 by default)."""
    at = start + hour * 3600
    return UsageRow(
        usage_id=usage_id(allocation, model, at),
        tenant=tenant,
        job_id=f"job-{allocation}",
        allocation_id=allocation,
        gpu_model=model,
        job_class=job_class,
        contract_id=contract,
        hour=at,
        gpu_ms=gpu_ms,
        energy_mj=energy_mj,
    )


def contract(
    contract_id: str = "c-gpu",
    *,
    tenant: str = "acme",
    start: float = NOV_START,
    end: float = DEC_START,
    gpus: int = 0,
    power_w: float = 0.0,
    model: str | None = H200,
) -> ContractRecord:
    return ContractRecord(contract_id, tenant, start, end, gpus=gpus, power_w=power_w, gpu_model=model)
