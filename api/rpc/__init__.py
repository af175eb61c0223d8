"""The gRPC API (package `gpve.v1`, proto/gpve/v1/*.proto) on the services REST uses."""
