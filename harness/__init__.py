"""Real binaries and our own services as child processes on loopback, for the tests, the demo and the benchmarks.

child.py: the one process lifecycle (start, ready, drain, stop), with output.py (the child's output as lines) and
probes.py (readiness checks); envoy.py: the real Envoy on a rendered config; picker.py: `autonomic picker`. The
product (controller/, scorer/, proto/) never imports this package; sim/ and loadtests/ do.
"""
