"""The policy has no process-wide side effects; the controller pauses the cyclic GC around its pass."""

from __future__ import annotations

import gc

import pytest

from neocloud.scheduler.control import policy_pass
from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import Decision, PolicyInput
from tests.unit.policy.factories import fleet, job, policy_input


def an_input() -> PolicyInput:
    return policy_input(fleet(2), queue=[job("j1", gpus=4)])


def test_the_policy_leaves_the_garbage_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the policy paused the process's garbage collector")

    monkeypatch.setattr(gc, "disable", refuse)
    assert schedule(an_input()).placements


def test_the_controller_pauses_gc_for_the_pass_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def recording(inp: PolicyInput) -> Decision:
        seen.append(gc.isenabled())
        return schedule(inp)

    monkeypatch.setattr(policy_pass, "schedule", recording)
    assert gc.isenabled()
    assert policy_pass.decide(an_input()).placements
    assert seen == [False]
    assert gc.isenabled()

    def failing(inp: PolicyInput) -> Decision:
        raise RuntimeError("a pass that fails")

    monkeypatch.setattr(policy_pass, "schedule", failing)
    with pytest.raises(RuntimeError):
        policy_pass.decide(an_input())
    assert gc.isenabled()  # restored even when the pass raises
