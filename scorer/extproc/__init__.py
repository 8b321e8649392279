"""Envoy ext_proc shell of the endpoint picker: pure protocol translation, the per-stream state machine, the
ext_proc servicer and gRPC health on a grpclib server, and the local Envoy config/runner used by tests, benchmarks
and the demo."""
