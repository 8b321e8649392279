"""Routing: which router serves a trace best (prefix-cache hit ratio, TTFT, throughput), every router on a fresh fleet.

- cli.py: `autonomic bench routing` (options, validation; light to import), benchmark.py: its machinery (each router
  on its own fleet, the report); peers.py: sglang-router / vllm-router as children; fleet_group.py: one process per
  twin; bounds.py: the oracle and pooled-capacity ceilings of a trace;
- run.py: one routing run (Envoy round robin, the picker, the precise picker), for the demo and for
  precise_vs_approximate.py (`python -m loadtests.routing.precise_vs_approximate`);
- replay.py: the open-loop trace client; figures.py: a run's figures, from the client's records and the twins' logs;
- in_process.py and mixed_pool.py: the Director in front of engine twins in model time, no network (to rank profiles).
"""
