"""Reserved contracts during one pass: which are active, how much of each is in
use, whether a reserved job is admitted against its contract, and how much
capacity and power each holds back from other work.

A contract is `gpus` GPUs (of `gpu_model`, if set) or `power_w` watts over
[start, end). Its jobs count against it with their GPUs and their expected
power (gpus * expected_power_w_per_gpu). What it has not used is held back:
unused GPUs are carved out of the fleet (placement.py; only spot may borrow
them), unused watts are subtracted from the site power budget for everyone
else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from neocloud.scheduler.policy import explain
from neocloud.scheduler.policy.types import Contract, JobRequest

logger = logging.getLogger(__name__)


class ContractBook:
    """Contracts and their use, charged as the pass commits reserved jobs."""

    __slots__ = ("_held_power_w", "by_id", "held_total_w", "now", "used_gpus", "used_power_w")

    def __init__(
        self,
        contracts: Iterable[Contract],
        now: float,
        used_gpus: Mapping[str, int],
        used_power_w: Mapping[str, float],
    ) -> None:
        self.now = now
        self.by_id = {c.contract_id: c for c in sorted(contracts, key=lambda c: c.contract_id)}
        self.used_gpus = {cid: used_gpus.get(cid, 0) for cid in self.by_id}
        self.used_power_w = {cid: used_power_w.get(cid, 0.0) for cid in self.by_id}
        self._held_power_w = {
            c.contract_id: max(0.0, c.power_w - self.used_power_w[c.contract_id])
            for c in self.by_id.values()
            if c.power_w > 0.0 and c.active(now)
        }
        self.held_total_w = sum(self._held_power_w.values())  # watts held back from work of no contract

    def active(self, contract_id: str | None) -> bool:
        c = self.by_id.get(contract_id) if contract_id is not None else None
        return c is not None and c.active(self.now)

    def inactive(self, contract_id: str | None) -> str | None:
        """Why reserved work on this contract may not run now; None while the contract is active."""
        c = self.by_id.get(contract_id) if contract_id is not None else None
        if c is None:
            return "reserved work without an active contract"
        if self.now >= c.end:
            return f"contract {c.contract_id} ended"
        if self.now < c.start:
            return f"contract {c.contract_id} is not active yet"
        return None

    def gpu_headroom(self, contract: Contract) -> int:
        """GPUs the contract has reserved but does not use (0 for a power contract)."""
        return max(0, contract.gpus - self.used_gpus[contract.contract_id]) if contract.gpus > 0 else 0

    def carve_targets(self, horizon_s: float) -> list[tuple[Contract, int]]:
        """GPU contracts active now or starting within `horizon_s`, with unused GPUs to hold back."""
        out = []
        for c in self.by_id.values():
            if c.gpus > 0 and c.start <= self.now + horizon_s and self.now < c.end:
                h = self.gpu_headroom(c)
                if h > 0:
                    out.append((c, h))
        return out

    def held_power_w(self, except_contract: str | None = None) -> float:
        """Watts active power contracts hold back from work that is not theirs."""
        total = self.held_total_w
        if except_contract is not None:
            total -= self._held_power_w.get(except_contract, 0.0)
        return total

    def admit(self, job: JobRequest) -> tuple[Contract | None, str | None, str | None]:
        """(contract, GPU model to place on, None) if `job` may run as reserved now,
        else (contract or None, None, why not)."""
        cid = job.contract_id
        if cid is None:
            return None, None, explain.no_contract()
        c = self.by_id.get(cid)
        if c is None:
            return None, None, explain.unknown_contract(cid)
        if c.tenant != job.tenant:
            return c, None, explain.foreign_contract(cid)
        if self.now < c.start:
            return c, None, explain.contract_not_active(cid, c.start)
        if self.now >= c.end:
            return c, None, explain.contract_ended(cid, c.end)
        model = job.gpu_model or c.gpu_model
        if c.gpu_model is not None and job.gpu_model is not None and job.gpu_model != c.gpu_model:
            return c, None, explain.contract_model(cid, c.gpu_model, job.gpu_model)
        used = self.used_gpus[cid]
        if c.gpus > 0 and used + job.gpus > c.gpus:
            return c, None, explain.contract_full(cid, used, c.gpus, job.gpus)
        if c.gpus <= 0 and c.power_w <= 0.0:
            return c, None, explain.contract_full(cid, used, 0, job.gpus)
        if c.power_w > 0.0:
            need = job.gpus * job.expected_power_w_per_gpu
            over = self.used_power_w[cid] + need - c.power_w
            if over > 0.0:
                return c, None, explain.contract_power(cid, over, c.power_w)
        return c, model, None

    def charge(self, contract_id: str, gpus: int, power_w: float) -> None:
        """A job of the contract starts, or has room being made for it."""
        self.used_gpus[contract_id] += gpus
        self.used_power_w[contract_id] += power_w
        if contract_id in self._held_power_w:
            c = self.by_id[contract_id]
            self._held_power_w[contract_id] = max(0.0, c.power_w - self.used_power_w[contract_id])
            self.held_total_w = sum(self._held_power_w.values())
