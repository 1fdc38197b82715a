"""The demo's live view, rendered from a Snapshot (pure: no I/O, no clock), so a
test can check every frame. Two forms: a screen for a terminal (a nodes x GPUs
grid coloured by class and tenant, power against the site budget, the queue,
preemptions, revenue when billing provides it) and one compact line per refresh
for logs and CI, where redrawing would only make noise."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

LETTERS = {"internal": "I", "reserved": "R", "on_demand": "O", "spot": "S"}
IDLE = "."
CLASS_ORDER = ("internal", "reserved", "on_demand", "spot")
CLASS_WORDS = {"internal": "internal", "reserved": "reserved", "on_demand": "on-demand", "spot": "spot"}
# Background colours: internal work is always blue; each tenant gets the next of the rest.
INTERNAL_COLOR = 44
TENANT_COLORS = (42, 45, 43, 46, 41, 100, 102, 105)
RESET = "\x1b[0m"
HOME_AND_CLEAR = "\x1b[H\x1b[J"
BAR_WIDTH = 30


@dataclass(frozen=True, slots=True)
class GpuCell:
    job_class: str | None = None  # internal | reserved | on_demand | spot; None: idle
    tenant: str | None = None
    stopping: bool = False  # under a preemption notice or being cancelled

    @property
    def letter(self) -> str:
        if self.job_class is None:
            return IDLE
        letter = LETTERS.get(self.job_class, "?")
        return letter.lower() if self.stopping else letter


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    gpus: tuple[GpuCell, ...]
    power_w: float
    connected: bool = True


@dataclass(frozen=True, slots=True)
class ContractUse:
    tenant: str
    power_w: float | None  # what the contract reserves (None: a GPU contract)
    gpus: int | None
    drawn_w: float  # what its jobs' GPUs draw now
    used_gpus: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    minute: float  # demo time now
    minutes: float  # demo length
    speed: float
    nodes: tuple[NodeRow, ...]
    power_w: float  # the fleet's draw, from the scheduler's telemetry
    budget_w: float  # math.inf: no budget
    internal_demand_gpus: int
    internal_floor_gpus: int
    queued: Mapping[str, int] = field(default_factory=dict)  # class -> jobs waiting
    preemptions: int = 0
    tenants: tuple[str, ...] = ()  # colour order
    contracts: tuple[ContractUse, ...] = ()
    revenue: Decimal | None = None  # None until billing provides it: then nothing is shown
    currency: str = "USD"
    events: tuple[str, ...] = ()  # the latest scenario events, oldest first


def tenant_colors(tenants: Sequence[str]) -> dict[str, int]:
    return {t: TENANT_COLORS[i % len(TENANT_COLORS)] for i, t in enumerate(tenants)}


def grid(node: NodeRow, colors: Mapping[str, int] | None = None) -> str:
    """One node's GPUs as letters; with `colors`, each on its tenant's background."""
    if colors is None:
        return "".join(g.letter for g in node.gpus)
    out = []
    for g in node.gpus:
        if g.job_class is None:
            out.append(f"\x1b[2m{IDLE}{RESET}")
            continue
        bg = INTERNAL_COLOR if g.job_class == "internal" else colors.get(g.tenant or "", TENANT_COLORS[-1])
        style = f"{bg};30" + (";5" if g.stopping else "")  # dark letter; blinking while under notice
        out.append(f"\x1b[{style}m{g.letter}{RESET}")
    return "".join(out)


def fmt_kw(watts: float) -> str:
    return "no limit" if math.isinf(watts) else f"{watts / 1e3:.1f} kW"


def power_bar(power_w: float, budget_w: float, width: int = BAR_WIDTH) -> str:
    if math.isinf(budget_w) or budget_w <= 0:
        return f"{fmt_kw(power_w)} (no site budget)"
    share = power_w / budget_w
    filled = min(width, round(share * width))
    return f"[{'#' * filled}{'.' * (width - filled)}] {fmt_kw(power_w)} of {fmt_kw(budget_w)} ({share:.0%})"


def queue_text(queued: Mapping[str, int]) -> str:
    return " ".join(f"{CLASS_WORDS[c]} {queued.get(c, 0)}" for c in CLASS_ORDER)


def revenue_text(revenue: Decimal | None, currency: str) -> str | None:
    return None if revenue is None else f"revenue so far {revenue:,.2f} {currency}"


def legend(tenants: Sequence[str], color: bool) -> str:
    classes = "  ".join(f"{letter} {CLASS_WORDS[c]}" for c, letter in LETTERS.items())
    text = f"{classes}  {IDLE} idle; lower case: under preemption notice"
    if color and tenants:
        colors = tenant_colors(tenants)
        swatches = " ".join(f"\x1b[{colors[t]};30m {t} {RESET}" for t in tenants)
        text += f"\n        \x1b[{INTERNAL_COLOR};30m internal {RESET} {swatches}"
    return text


def _used(node: NodeRow) -> str:
    tenants = sorted({g.tenant for g in node.gpus if g.tenant})
    return ", ".join(tenants)


def render_screen(snap: Snapshot, color: bool = True) -> str:
    """The whole screen for a terminal (the caller homes the cursor and clears first)."""
    colors = tenant_colors(snap.tenants) if color else None
    bold, off = ("\x1b[1m", RESET) if color else ("", "")
    lines = [
        f"{bold}neocloud demo{off}  minute {snap.minute:4.1f} of {snap.minutes:g}  "
        f"(x{snap.speed:g}: a demo minute is {60 / snap.speed:.1f} s)",
        f"internal demand {snap.internal_demand_gpus} GPUs (floor {snap.internal_floor_gpus})",
        "",
    ]
    width = max((len(n.node_id) for n in snap.nodes), default=4)
    for node in snap.nodes:
        state = "" if node.connected else "  (agent silent)"
        cells = grid(node, colors)
        lines.append(f"  {node.node_id:<{width}}  {cells}  {fmt_kw(node.power_w):>8}  {_used(node)}{state}")
    lines += ["", f"  power     {power_bar(snap.power_w, snap.budget_w)}"]
    for c in snap.contracts:
        if c.power_w is not None:
            lines.append(f"  contract  {c.tenant}: {fmt_kw(c.drawn_w)} drawn of {fmt_kw(c.power_w)} reserved")
        else:
            lines.append(f"  contract  {c.tenant}: {c.used_gpus} of {c.gpus} GPUs in use")
    lines.append(f"  queue     {queue_text(snap.queued)}")
    lines.append(f"  preempted {snap.preemptions} so far")
    money = revenue_text(snap.revenue, snap.currency)
    if money is not None:
        lines.append(f"  {money}")
    lines += ["", f"  {legend(snap.tenants, color)}", ""]
    lines += [f"  {e}" for e in snap.events]
    return "\n".join(lines)


def render_line(snap: Snapshot) -> str:
    """One compact status line (no colour, no cursor movement)."""
    counts = {letter: 0 for letter in (*LETTERS.values(), IDLE)}
    for node in snap.nodes:
        for g in node.gpus:
            counts[g.letter.upper() if g.job_class else IDLE] += 1
    used = " ".join(f"{k}{v}" for k, v in counts.items())
    nodes = "|".join(grid(n) for n in snap.nodes)
    budget = "" if math.isinf(snap.budget_w) else f"/{snap.budget_w / 1e3:.1f}"
    parts = [
        f"[min {snap.minute:4.1f}/{snap.minutes:g}]",
        nodes,
        used,
        f"power {snap.power_w / 1e3:.1f}{budget} kW",
        f"queue {queue_text(snap.queued)}",
        f"preempted {snap.preemptions}",
    ]
    money = revenue_text(snap.revenue, snap.currency)
    if money is not None:
        parts.append(money)
    return " | ".join(parts)
