"""The scheduling benchmark runs at small scale and builds a valid input."""

from __future__ import annotations

from neocloud.bench.schedule import build_input, policy_pass
from neocloud.scheduler.policy.engine import schedule
from tests.unit.policy.factories import check_invariants


def test_policy_pass_reports_the_figures() -> None:
    out = policy_pass(nodes=120, queued=150, seed=1)
    assert out["nodes"] == 120 and out["gpus"] == 960 and out["queued"] == 150
    assert out["policy_pass_ms"] > 0
    assert out["placements"] > 0
    assert {"preemptions", "warnings", "running"} <= set(out)


def test_the_synthetic_input_is_valid_and_deterministic() -> None:
    inp = build_input(nodes=200, queued=300, seed=2)
    assert inp == build_input(nodes=200, queued=300, seed=2)
    busy = sum(len(gs) for r in inp.running for _, gs in r.placement)
    assert 0.5 < busy / (200 * 8) < 0.7
    d = schedule(inp)
    check_invariants(inp, d)
