"""The control plane: telemetry ingest, the policy and the controller, jobs on Ray, metering, billing and the gRPC API.
Imports neocloud.domain, neocloud.wire and neocloud.v1; never the agent, the client, the CLI or the demo."""
