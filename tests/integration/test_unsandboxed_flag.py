"""--allow-unsandboxed-tenants: parsed by the CLI, logged loudly at start, exported as a metric."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from neocloud.cli.main import build_parser
from neocloud.scheduler.server import BackgroundScheduler

METRIC = "neocloud_scheduler_unsandboxed_tenants_allowed"


def test_flag_is_parsed() -> None:
    parser = build_parser()
    assert parser.parse_args(["scheduler", "--allow-unsandboxed-tenants"]).allow_unsandboxed_tenants is True
    assert parser.parse_args(["scheduler"]).allow_unsandboxed_tenants is False


@pytest.mark.parametrize("allowed", [False, True])
def test_metric_and_loud_log(
    allowed: bool, scheduler_factory: Callable[..., BackgroundScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        sched = scheduler_factory(allow_unsandboxed_tenants=allowed)
    assert sched.scheduler.registry.get_sample_value(METRIC) == float(allowed)
    assert ("TENANT JOBS MAY RUN UNSANDBOXED" in caplog.text) is allowed
