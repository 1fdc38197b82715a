"""Why a job waits, in a tenant's words: one short sentence per pending job,
built from a few counters the engine already has (no extra fleet scans)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from neocloud.scheduler.policy.types import JobClass

logger = logging.getLogger(__name__)

CLASS_WORDS = {
    JobClass.SPOT: "spot",
    JobClass.ON_DEMAND: "on-demand",
    JobClass.RESERVED: "reserved",
    JobClass.INTERNAL: "internal",
}


def watts(w: float) -> str:
    """700 W, 5.6 kW, 1.2 MW."""
    if w >= 1e6:
        return f"{w / 1e6:.1f} MW"
    if w >= 1e3:
        return f"{w / 1e3:.1f} kW"
    return f"{w:.0f} W"


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def when_s(ts: float) -> str:
    """To the second: a time, not a countdown, so the sentence stays the same from pass to pass."""
    return datetime.fromtimestamp(round(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _what(gpus: int, model: str | None, per_node: int) -> str:
    of = f" of {model}" if model else ""
    return f"{gpus} GPUs{of} at {per_node} per node"


def capacity(gpus: int, model: str | None, per_node: int, nodes_ready: int, whole: bool) -> str:
    """Not enough free nodes of the right shape; `nodes_ready` have room for one slice of the gang."""
    if whole:
        have = f"{_plural(nodes_ready, 'whole node')} free"
    else:
        have = f"{_plural(nodes_ready, 'node')} with {per_node} free GPUs"
    return f"waiting for {_what(gpus, model, per_node)}: {have}, {gpus // per_node} needed"


def unsandboxed(gpus: int, model: str | None, per_node: int, free_gpus: int) -> str:
    """It would start, but on nodes that cannot sandbox tenant work (fleet.may_run_on)."""
    return (
        f"waiting for {_what(gpus, model, per_node)}: {_plural(free_gpus, 'GPU')} free on nodes that cannot "
        "sandbox tenant work; waiting for a sandboxed node"
    )


def first_in_line(text: str, held: int) -> str:
    return f"{text}; first in line, {_plural(held, 'node')} held for it"


def fair_share(ahead: int, text: str) -> str:
    return f"tenant fair share: {_plural(ahead, 'job')} of tenants with less usage went first; {text}"


def held_for_contracts(gpus: int, model: str | None, per_node: int) -> str:
    return (
        f"waiting for {_what(gpus, model, per_node)}: the free capacity is held for reserved contracts"
        " (only spot work may borrow it)"
    )


def invalid_shape(gpus: int, per_node: int) -> str:
    return f"invalid shape: {gpus} GPUs cannot run at {per_node} per node (GPUs must be a positive multiple)"


def never_fits(gpus: int, model: str | None, per_node: int, nodes: int) -> str:
    return (
        f"no room in this fleet for {_what(gpus, model, per_node)}: "
        f"{_plural(nodes, 'node')} with {per_node} or more GPUs, {gpus // per_node} needed"
    )


def unknown_model(model: str) -> str:
    return f"no {model} GPUs in this fleet"


def site_power(over_w: float, budget_w: float, held_w: float = 0.0) -> str:
    held = f" ({watts(held_w)} of it held for reserved contracts)" if held_w > 0.0 else ""
    return f"site power budget: starting it would draw {watts(over_w)} over the {watts(budget_w)} budget{held}"


def site_power_held(need_w: float) -> str:
    return f"site power budget: the remaining power is held for a job first in line (this one needs {watts(need_w)})"


def contract_power(contract_id: str, over_w: float, envelope_w: float) -> str:
    return (
        f"your contract {contract_id} power envelope: starting it would draw {watts(over_w)} "
        f"over its {watts(envelope_w)}"
    )


def no_contract() -> str:
    return "reserved jobs need a contract: none given"


def unknown_contract(contract_id: str) -> str:
    return f"your contract {contract_id} is unknown"


def foreign_contract(contract_id: str) -> str:
    return f"contract {contract_id} belongs to another tenant"


def contract_not_active(contract_id: str, start: float) -> str:
    return f"your contract {contract_id} is not active until {when(start)}"


def contract_ended(contract_id: str, end: float) -> str:
    return f"your contract {contract_id} ended at {when(end)}"


def contract_full(contract_id: str, used: int, size: int, gpus: int) -> str:
    return (
        f"not admitted as reserved: your contract {contract_id} is fully used "
        f"({used} of {size} GPUs running or starting; this job needs {gpus} more)"
    )


def contract_model(contract_id: str, contract_model: str, job_model: str) -> str:
    return f"your contract {contract_id} covers {contract_model} GPUs, not {job_model}"


def preempting(counts: dict[JobClass, int]) -> str:
    parts = [_plural(n, f"{CLASS_WORDS[c]} job") for c, n in sorted(counts.items()) if n]
    return f"preempting {' and '.join(parts)} to make room (notice sent)"


def awaiting_release(gpus: int) -> str:
    return f"waiting for preempted work to release its GPUs ({gpus} GPUs under notice)"


def awaiting_min_runtime(at: float) -> str:
    return (
        f"capacity will be reclaimed from lower-class work once it has run its minimum time "
        f"(at {when_s(at)}; it has been warned)"
    )


def cannot_preempt(text: str) -> str:
    return f"{text}; nothing it may preempt would make room"


# --- what preempted and warned jobs are told


def preemption_reason(job_class: int, contract_id: str | None, lent: bool, floor: bool) -> str:
    """Why a job is preempted, for the job its room is made for (of class `job_class`)."""
    if job_class == JobClass.INTERNAL:
        return "internal work reclaims its floor" if floor else "internal work needs spot capacity"
    if job_class == JobClass.RESERVED:
        return f"reserved contract {contract_id} reclaims {'its lent capacity' if lent else 'its capacity'}"
    return "on-demand work needs spot capacity"


def reclaim_soon(reserved: bool, contract_id: str | None, at: float) -> str:
    who = f"reserved contract {contract_id}" if reserved else "internal work"
    return f"{who} needs these GPUs: preemption may follow at {when_s(at)}"


def reclaim_at_start(contract_id: str, start: float) -> str:
    return f"reserved contract {contract_id} starts at {when(start)} and will need these GPUs"
