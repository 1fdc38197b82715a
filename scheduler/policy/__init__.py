"""The scheduling policy: a pure function from plain data (inventory, health, power, contracts, jobs, clock) to a Decision.
Imports only the standard library: no store, executor, API, Ray or gRPC (checked in make lint)."""
