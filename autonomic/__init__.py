"""autonomic: PSI rebalancer for KubeVirt and GIE endpoint picker for vLLM fleets."""
