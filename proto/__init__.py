"""The project's own gRPC API; Envoy ext_proc messages come from xds-protos."""
