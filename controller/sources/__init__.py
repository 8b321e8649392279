"""Where the controller's inputs come from: node pressure and per-VM usage from Prometheus (`prometheus.py`),
cluster state from the Kubernetes API through watches and a local cache (`cluster.py`, `objects.py`; the watcher
itself, shared with the picker, is `common/kube_watch.py`).
Both check what they read where it enters; `controller.validate` decides whether a cycle may trust it."""
