"""The scheduling policy: a pure function of plain data (inventory, health, power, contracts, jobs) -> Decision.
Imports only the standard library: no store, executor, API, Ray or gRPC (checked in make lint)."""
