"""Picker: what the endpoint picker costs, against baselines measured in the same run.

- cli.py: `autonomic bench picker` (light to import), benchmark.py: its machinery and report, from three parts:
  schedule_latency.py (`Director.pick()` in process), envoy_hop.py (the ext_proc hop through a real Envoy) and
  scrape_cost.py (the scraper against metrics_stub.py's cheap endpoints); the first two also run on their own
  (`python -m loadtests.picker.schedule_latency`, `python -m loadtests.picker.envoy_hop`).
- index_memory.py: the prefix index's resident memory against its budget (`maxIndexBytes`) at 100 endpoints and
  100k-token prompts, one child process per budget (`python -m loadtests.picker.index_memory`).
"""
