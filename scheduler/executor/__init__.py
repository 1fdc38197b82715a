"""Runs jobs on Ray: placement groups pinned to the chosen nodes, one runner actor per rank, signals and logs.
The only package that imports ray; imports neocloud.domain and nothing else of the scheduler."""
