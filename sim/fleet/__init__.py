"""vLLM fleet twin: N vLLM-compatible servers with a real paged prefix cache and a calibrated latency model."""
