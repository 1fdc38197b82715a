"""The node agent: reads GPUs through a backend, spools batches on disk, streams them to the scheduler.
Imports neocloud.domain, neocloud.wire and neocloud.v1; never anything of the scheduler."""
