"""PSI rebalancer: reads node pressure from Prometheus and live-migrates KubeVirt VMs off pressured nodes."""
