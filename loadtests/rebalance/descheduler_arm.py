"""The `descheduler` arm: the real sigs.k8s.io/descheduler binary, run as the operator runs it, against the twin.

Why it exists: `descheduler-compatible` is our re-implementation of the KubeVirtRelieveAndMigrate profile; the
benchmark is only convincing if the real peer runs beside it, in the same run, on the same fresh twin and its
Prometheus, measured the same way. This module knows the binary (`make descheduler`: .gopath/bin/descheduler,
`AUTONOMIC_DESCHEDULER` elsewhere), the policy file the operator renders, the command line, how to give the binary
the in-cluster files it insists on; `descheduler_log.py` reads its log. `run.py` starts it where it would start our
controller.

The policy is the one the operator's release-4.21 renders (../shared/docs/reference/descheduler.md §1.2):
LowNodeUtilization on the Prometheus recording rule (deviation thresholds 0/10), DefaultEvictor (local-storage pods
evictable, `noEvictionPolicy: Mandatory`), `maxNoOfPodsToEvictPerNode` 2, `maxNoOfPodsToEvictTotal` 5, nodeSelector
`kubevirt.io/schedulable=true`, with `--feature-gates EvictionsInBackground=true`. Not the main branch's: its
`KubevirtMigrationAware` evictor lives in github.com/openshift-virtualization/kubevirt-descheduler-plugins, which the
Go module proxy does not serve (403, "This module version is not available"; nor github.com/openshift/descheduler,
which vendors it), so it cannot be built here, and without it `evictionLimits.node: 2` alone would be neither
profile. The arm is therefore the 4.21 GA profile and says so; `descheduler-compatible-ga` is its like.

Time scale. The binary runs on the wall clock; the twin's model time runs `time_scale` times faster. The mapping:
- `--descheduling-interval` = the arms' model interval / time_scale (60 model s at 20x: 3 s), as our controller's;
- its Prometheus query runs at wall-clock now, and the twin's Prometheus stores samples at wall-clock times with
  rate windows already scaled (3 s at 20x is the reference's 1 minute), so it reads the model's present score;
- what stays unscaled: the 600 s expiry of background evictions never confirmed and the 10 min cache resync
  (200 model minutes at 20x: they never fire in a run, while the twin confirms each eviction by annotation within a
  model minute), and client-go's timeouts. The GA policy reads no object timestamps (the twin's are model time).

In-cluster files. Its Prometheus client exists only "in cluster": `rest.InClusterConfig` (the
`KUBERNETES_SERVICE_*` variables and the token at /var/run/secrets/kubernetes.io/serviceaccount) and that
directory's `ca.crt`, whatever `--kubeconfig` says. The twin runs with TLS and writes such a directory; the binary
runs in a private mount namespace (`unshare --mount`, or `--user --map-root-user --mount` when not root) where a
tmpfs on /run holds a bind mount of it, so nothing is written outside the run's own files. Without `unshare` or the
binary, the arm is skipped with the reason (`unavailable()`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.child import Child
from loadtests.rebalance.descheduler_log import LogSummary
from sim.cluster.twin import ClusterTwin

DESCHEDULER = "descheduler"
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = ROOT / ".gopath" / "bin" / "descheduler"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SCORE_RULE = "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m"
EXCLUDED_NAMESPACES = (
    "kube-system",
    "hypershift",
    "openshift",
    "openshift-kube-descheduler-operator",
    "openshift-kube-scheduler",
)
PROFILE = "4.21 GA (no KubevirtMigrationAware: its module is not served by the Go module proxy)"
# argv[0] of the script is its name; then the service-account directory, then the command to exec
_IN_CLUSTER = (
    "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/secrets/kubernetes.io/serviceaccount; "
    'mount --bind "$1" /run/secrets/kubernetes.io/serviceaccount; shift; exec "$@"'
)


@dataclass(frozen=True)
class Binary:
    path: Path
    version: str  # from the `.version` file the install script writes beside it

    def describe(self) -> str:
        return f"sigs.k8s.io/descheduler {self.version} ({self.path})"


def binary_path() -> Path:
    return Path(os.environ.get("AUTONOMIC_DESCHEDULER", DEFAULT_BINARY))


def find_binary(path: Path | None = None) -> Binary | None:
    path = path or binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        return None
    stamp = path.with_name(path.name + ".version")
    version = stamp.read_text().strip() if stamp.is_file() else "unknown version (no .version file)"
    return Binary(path, version or "unknown version")


def namespace_prefix() -> list[str]:
    """`unshare` arguments for a private mount namespace: plain as root, inside a user namespace otherwise."""
    return ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-rm"]


def unavailable(path: Path | None = None) -> str | None:
    """Why the arm cannot run here (None when it can): no binary, or no private mount namespace."""
    path = path or binary_path()
    if find_binary(path) is None:
        return f"no descheduler binary at {path} (build it with `make descheduler`, or set AUTONOMIC_DESCHEDULER)"
    if shutil.which("unshare") is None:
        return "no `unshare` (util-linux): the descheduler needs its in-cluster files in a private mount namespace"
    probe = subprocess.run([*namespace_prefix(), "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot make a private mount namespace ({' '.join(namespace_prefix())}): {probe.stderr.strip()}"
    return None


def render_policy(prometheus_url: str, query: str = SCORE_RULE) -> dict[str, Any]:
    """The DeschedulerPolicy the operator's release-4.21 renders for KubeVirtRelieveAndMigrate (reference §1.2)."""
    return {
        "apiVersion": "descheduler/v1alpha2",
        "kind": "DeschedulerPolicy",
        "maxNoOfPodsToEvictPerNode": 2,
        "maxNoOfPodsToEvictTotal": 5,
        "metricsProviders": [{"source": "Prometheus", "prometheus": {"url": prometheus_url}}],
        "nodeSelector": "kubevirt.io/schedulable=true",
        "profiles": [
            {
                "name": "KubeVirtRelieveAndMigrate",
                "pluginConfig": [
                    {
                        "name": "LowNodeUtilization",
                        "args": {
                            "evictableNamespaces": {"exclude": list(EXCLUDED_NAMESPACES)},
                            "metricsUtilization": {"source": "Prometheus", "prometheus": {"query": query}},
                            "thresholds": {"MetricResource": 0},
                            "targetThresholds": {"MetricResource": 10},
                            "useDeviationThresholds": True,
                        },
                    },
                    {
                        "name": "DefaultEvictor",
                        "args": {"evictLocalStoragePods": True, "noEvictionPolicy": "Mandatory"},
                    },
                ],
                "plugins": {"balance": {"enabled": ["LowNodeUtilization"]}, "filter": {"enabled": ["DefaultEvictor"]}},
            }
        ],
    }


def interval_flag(interval_s: float, time_scale: float) -> str:
    """`--descheduling-interval` for a model interval at a time scale: wall milliseconds (Go duration), >= 1 ms."""
    return f"{max(1, round(1000 * interval_s / time_scale))}ms"


def command(binary: Path, policy: Path, kubeconfig: Path, service_account_dir: Path, interval: str) -> list[str]:
    """The whole argv: the namespace, the mounts, then the descheduler with the flags the operator passes."""
    return [
        *namespace_prefix(),
        "sh",
        "-c",
        _IN_CLUSTER,
        "in-cluster",
        str(service_account_dir),
        str(binary),
        "--kubeconfig",
        str(kubeconfig),
        "--policy-config-file",
        str(policy),
        "--descheduling-interval",
        interval,
        "--feature-gates",
        "EvictionsInBackground=true",
        "--secure-port",
        "0",
        "--v",
        "3",
    ]


def write_policy(directory: Path, prometheus_url: str) -> Path:
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(render_policy(prometheus_url), sort_keys=False))
    return path


def environment(api_port: int) -> dict[str, str]:
    """The variables `rest.InClusterConfig` reads, on top of ours (PATH for `sh`, `mount`)."""
    return {**os.environ, "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_port)}


class DeschedulerProcess:
    """The binary as a child of the twin's event loop (harness.child): started once its informers have synced and
    its first cycle begins, stopped (SIGTERM, then SIGKILL) before the twin; its log summarized as it arrives."""

    READY = re.compile(r"Resetting pod evictor counters")  # logged at the start of every cycle, after the sync

    def __init__(self, binary: Binary, interval: str) -> None:
        self.binary, self.interval = binary, interval
        self.summary = LogSummary()
        self._dir = tempfile.TemporaryDirectory(prefix="autonomic-descheduler-")
        self._child: Child | None = None
        self._twin: ClusterTwin | None = None

    def describe(self) -> str:
        return f"{self.binary.describe()}, KubeVirtRelieveAndMigrate as the operator renders it for {PROFILE}"

    def start(self, twin: ClusterTwin, prometheus_url: str, ready_timeout_s: float = 180.0) -> None:
        sa_dir, app = twin.service_account_dir, twin.app
        if sa_dir is None or app is None:
            raise RuntimeError("the descheduler arm needs a twin started with tls=True (its in-cluster files)")
        workdir = Path(self._dir.name)
        policy = write_policy(workdir, prometheus_url)
        argv = command(self.binary.path, policy, twin.kubeconfig_path, sa_dir, self.interval)
        self._twin = twin
        self._child = Child(
            argv,
            name="descheduler",
            ready=self.READY,
            ready_timeout_s=ready_timeout_s,
            env=environment(app.port),
            log_path=workdir / "descheduler.log",
            on_line=self.summary.feed,
            process_group=True,
            die_with_parent=True,
        )
        twin.run(self._child.start(), timeout=ready_timeout_s + 30)

    def stop(self) -> dict[str, Any]:
        """Stop it; what it did, for runs.json (`descheduler`) and the errors if it died on its own."""
        out: dict[str, Any] = {"binary": str(self.binary.path), "version": self.binary.version}
        child = self._child
        errors = list(self.summary.errors)  # the cycle our SIGTERM cuts short logs its cancelled calls: not counted
        if child is not None and self._twin is not None:
            exited_early = not child.running
            code = self._twin.run(child.stop())
            if exited_early:
                out["error"] = f"the descheduler exited early (code {code}): {child.tail(5)}"
            out["log_tail"] = child.output[-40:]
        out.update(
            interval=self.interval,
            cycles=self.summary.cycles,
            background_evictions=self.summary.background_evictions,
            evicting_from=self.summary.evicting_from,
            log_errors=errors,
            log_errors_at_stop=self.summary.errors[len(errors) :],
            policy=render_policy("<the twin's Prometheus>"),
        )
        self._dir.cleanup()
        return out
