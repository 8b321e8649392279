"""What both services share, and nothing else: the Kubernetes watcher, structured logging, the KV-event wire codec.

Why it is its own package: `controller` and `scorer` never import each other, and the product never imports the
twins (`sim/`) or the benchmarks (`loadtests/`). A piece both services need, or a wire format the product speaks and
the twin imitates, lives here, so that every arrow points down: sim/loadtests -> controller/scorer -> common.
Modules here import only the standard library and third-party packages.
"""
