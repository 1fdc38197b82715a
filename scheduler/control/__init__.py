"""The control loop: executor events into the store, then policy passes out to the store and the executor.
May import the store, executor.types (never ray_executor), ingest.fleet, inventory, metering, policy, domain."""
