"""Domain types both sides share: GPU readings, fleet and energy state, UTC hours, recorded traces, errors, the clock.
Imports only the standard library and the generated wire contract (neocloud.v1); nothing of the services."""
