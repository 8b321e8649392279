"""Digital twins (a vLLM fleet, a Kubernetes+KubeVirt cluster) so everything runs on one machine."""
