"""The demo's live view, rendered from snapshots: the grid, power against the
budget, the queue, preemptions, revenue only when billing gives one, colour
only for a terminal."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from neocloud.demo.view import (
    ContractUse,
    GpuCell,
    NodeRow,
    Snapshot,
    grid,
    legend,
    power_bar,
    render_line,
    render_screen,
)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _cells(*spec: tuple[str | None, str | None, int]) -> tuple[GpuCell, ...]:
    out: list[GpuCell] = []
    for job_class, tenant, n in spec:
        out += [GpuCell(job_class, tenant)] * n
    return tuple(out)


def _snapshot(**overrides: object) -> Snapshot:
    fields: dict[str, object] = {
        "minute": 23.5,
        "minutes": 60,
        "speed": 40,
        "nodes": (
            NodeRow("demo-node-1", _cells(("internal", "internal", 8)), 4900.0),
            NodeRow("demo-node-2", _cells(("reserved", "globex", 8)), 4450.0),
            NodeRow("demo-node-3", (GpuCell("spot", "acme", stopping=True),) * 8, 4000.0),
            NodeRow("demo-node-4", _cells(("spot", "initech", 4), (None, None, 4)), 2100.0, connected=False),
        ),
        "power_w": 15460.0,
        "budget_w": 32000.0,
        "internal_demand_gpus": 8,
        "internal_floor_gpus": 8,
        "queued": {"spot": 2},
        "preemptions": 1,
        "tenants": ("globex", "acme", "initech"),
        "contracts": (ContractUse("globex", 5600.0, None, 4450.0, 8),),
        "events": ("min 18.0  internal demand 16 -> 8 GPUs", "min 20.0  initech submits 2 x 4-GPU spot job"),
    }
    fields.update(overrides)
    return Snapshot(**fields)  # type: ignore[arg-type]


def test_the_status_line_is_compact_and_plain() -> None:
    line = render_line(_snapshot())
    assert line == (
        "[min 23.5/60] | IIIIIIII|RRRRRRRR|ssssssss|SSSS.... | I8 R8 O0 S12 .4 | power 15.5/32.0 kW"
        " | queue internal 0 reserved 0 on-demand 0 spot 2 | preempted 1"
    )
    assert "\x1b" not in line and "\n" not in line and "revenue" not in line


def test_revenue_is_shown_only_when_billing_gives_one() -> None:
    assert "revenue" not in render_screen(_snapshot(), color=False)
    snap = _snapshot(revenue=Decimal("12345.678"))
    assert render_line(snap).endswith(" | revenue so far 12,345.68 USD")
    assert "revenue so far 12,345.68 USD" in render_screen(snap, color=False)


def test_plain_screen_has_letters_a_legend_power_queue_and_events() -> None:
    screen = render_screen(_snapshot(), color=False)
    assert "\x1b" not in screen
    assert "minute 23.5 of 60" in screen and "internal demand 8 GPUs (floor 8)" in screen
    rows = [line.split() for line in screen.splitlines() if line.strip().startswith("demo-node-")]
    assert [r[:2] for r in rows] == [
        ["demo-node-1", "IIIIIIII"],
        ["demo-node-2", "RRRRRRRR"],
        ["demo-node-3", "ssssssss"],
        ["demo-node-4", "SSSS...."],
    ]
    assert rows[1][-1] == "globex" and "(agent silent)" in screen
    assert "I internal  R reserved  O on-demand  S spot  . idle; lower case: under preemption notice" in screen
    assert "[##############................] 15.5 kW of 32.0 kW (48%)" in screen
    assert "contract  globex: 4.5 kW drawn of 5.6 kW reserved" in screen
    assert "queue     internal 0 reserved 0 on-demand 0 spot 2" in screen
    assert "preempted 1 so far" in screen
    assert screen.rstrip().endswith("min 20.0  initech submits 2 x 4-GPU spot job")


def test_colour_screen_colours_by_class_and_tenant() -> None:
    snap = _snapshot()
    screen = render_screen(snap, color=True)
    plain = render_screen(snap, color=False).splitlines()
    stripped = ANSI.sub("", screen).splitlines()
    assert [line for line in stripped if line.split()[:2] != ["internal", "globex"]] == plain  # + swatches
    internal, reserved, spot_acme = (grid(n, {"globex": 42, "acme": 45, "initech": 43}) for n in snap.nodes[:3])
    assert internal == "\x1b[44;30mI\x1b[0m" * 8  # internal work is always blue
    assert reserved == "\x1b[42;30mR\x1b[0m" * 8  # each tenant its own background
    assert spot_acme == "\x1b[45;30;5ms\x1b[0m" * 8  # blinking while under notice
    assert ANSI.sub("", grid(snap.nodes[3], {"initech": 43})) == "SSSS...."
    assert "\x1b[42;30m globex " in legend(snap.tenants, color=True)
    assert "\x1b" not in legend(snap.tenants, color=False)


def test_power_without_a_budget_and_over_it() -> None:
    assert power_bar(1500.0, math.inf) == "1.5 kW (no site budget)"
    assert power_bar(40000.0, 32000.0, width=10) == "[##########] 40.0 kW of 32.0 kW (125%)"
    line = render_line(_snapshot(budget_w=math.inf))
    assert "power 15.5 kW" in line


def test_gpu_contracts_and_an_empty_fleet() -> None:
    snap = _snapshot(nodes=(), power_w=0.0, contracts=(ContractUse("acme", None, 16, 0.0, 8),), events=())
    screen = render_screen(snap, color=False)
    assert "contract  acme: 8 of 16 GPUs in use" in screen
    assert render_line(snap).startswith("[min 23.5/60] |  | I0 R0 O0 S0 .0 | power 0.0/32.0 kW")
