"""Where the picker's inputs come from: the endpoints of the pool and their model-server metrics.

`endpoints` reads the static pool of local mode (a flag or a YAML file), `model_metrics` checks a vLLM `/metrics`
body and turns it into `EndpointMetrics`, `scraper` scrapes every endpoint on its own schedule and feeds the
Director. Kubernetes discovery and KV-cache events will live here too.
"""
