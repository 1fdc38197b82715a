"""The control loop: executor events into the store, then policy passes out to the store and the executor.
May import the store, executor.types (never ray_executor), ingest.fleet, inventory, metering, policy, domain."""

from neocloud.scheduler.control.policy_pass import decide

__all__ = ["decide"]
