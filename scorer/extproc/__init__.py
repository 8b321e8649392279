"""Envoy ext_proc shell of the endpoint picker: pure protocol translation, the per-stream state machine, the
grpc.aio servicer with health, and the local Envoy config/runner used by tests, benchmarks and the demo."""
