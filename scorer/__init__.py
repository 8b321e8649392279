"""Endpoint picker: scores vLLM replicas for prefix affinity and load; serves Envoy ext_proc."""
