"""The scheduling policy: a pure function of plain data (inventory, health, power, contracts, jobs) -> Decision.
Imports only the standard library: no store, executor, API, Ray or gRPC (checked in make lint)."""

from neocloud.scheduler.policy.engine import schedule
from neocloud.scheduler.policy.types import (
    INTERNAL_TENANT,
    Contract,
    Decision,
    JobClass,
    JobRequest,
    NodeView,
    PolicyConfig,
    PolicyInput,
    RunningJob,
)

__all__ = [
    "INTERNAL_TENANT",
    "Contract",
    "Decision",
    "JobClass",
    "JobRequest",
    "NodeView",
    "PolicyConfig",
    "PolicyInput",
    "RunningJob",
    "schedule",
]
