"""The gRPC JobService, AdminService and UsageService: token auth, request conversion, one error interceptor.
Imports the store, billing, the policy's types and the executor's interface; not the controller."""
