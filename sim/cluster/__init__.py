"""Cluster twin: the Kubernetes and KubeVirt REST API over HTTP, with PSI derived from real VM load."""
