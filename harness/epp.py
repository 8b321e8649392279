"""The field's reference endpoint picker, the Gateway API Inference Extension EPP (`cmd/epp`, v1.5.0), as a child
process on loopback, for the routing benchmark's `epp-*` arms and their test.

Why it exists: the routing benchmark compares our picker with the reference EPP behind the same Envoy; this is the
one place that knows the EPP's command line, environment and readiness. `make peers` builds the binary
(scripts/install-epp.sh, which says why v1.5.0) into `.gopath-peers/bin/epp`; `EPP_BIN` points elsewhere.

InferencePool mode, as the shipped Helm chart (config/charts/inferencepool) runs it: `--pool-name N --pool-namespace
NS`; it watches that InferencePool (`inference.networking.k8s.io/v1`) and the Pods of NS through the Kubernetes API
(`KUBECONFIG`: the cluster twin's) and makes `podIP:targetPort` an endpoint of every Ready Pod the pool selects.
Not the standalone mode (`--endpoint-selector k=v --endpoint-target-ports P`, no InferencePool): in v1.5.0 it
cannot start from the command line. Options.Validate refuses `--pool-name` next to `--endpoint-selector`, and
runner.setupDatastore then passes the empty `--pool-namespace`/`--pool-name` flags (not the names it resolved from
NAMESPACE and POD_NAME) to NewEndpointPoolFromOptions, which exits with "namespace must not be empty" (with
`--pool-namespace`: "name must not be empty"). llm-d-router later passes the resolved names.

Flags that differ from the binary's defaults, as the chart sets them or for loopback:

- `--secure-serving=false`: ext_proc in plaintext, as our picker runs in the benchmark (the binary's default is a
  self-signed TLS certificate, which GIE's gateways do not verify);
- `--tracing=false`: the chart's default (no OpenTelemetry collector here);
- `--metrics-endpoint-auth=false`: the chart's default unless Prometheus auth is enabled (with it, each scrape of its
  /metrics costs a TokenReview and a SubjectAccessReview);
- fresh ports for `--grpc-port` (ext_proc), `--grpc-health-port` (gRPC health: SERVING once it has its pool) and
  `--metrics-port`. The binary binds them on every interface (":port"); it has no flag for the host.

No `--config-file`: its built-in default plugins (pkg/epp/config/loader/defaults.go), the same as the chart's
default-plugins.yaml. Ready when its health port answers SERVING for the ext_proc service (the check Envoy makes, see
EnvoyOptions.picker_grpc_health_port) and its /metrics lists `expected_endpoints` endpoints.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

from harness.child import Child, ChildWrapper
from harness.netutil import free_ports
from harness.probes import NotReady, grpc_health_ready

REPO = Path(__file__).resolve().parents[1]
EPP_VERSION = "v1.5.0"  # scripts/install-epp.sh
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_ENDPOINT_SERIES = re.compile(r"^inference_pool_per_pod_queue_size\{", re.MULTILINE)


def epp_binary() -> Path:
    return Path(os.environ.get("EPP_BIN") or REPO / ".gopath-peers" / "bin" / "epp")


def missing_reason() -> str | None:
    """Why the EPP cannot run here, or None."""
    path = epp_binary()
    return None if path.exists() else f"{path} missing: run `make peers` (needs Go >= 1.25)"


def deployment_pod_name(deployment: str) -> str:
    """A pod name as a Deployment's ReplicaSet makes them: `<deployment>-<10-char hash>-<5-char id>`."""
    rng = random.Random()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String alphabet
    return f"{deployment}-{''.join(rng.choices(alphabet, k=10))}-{''.join(rng.choices(alphabet, k=5))}"


class EppProcess(ChildWrapper):
    """The EPP as a child process; `start()` returns once it serves and sees its endpoints."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        pool_name: str,
        expected_endpoints: int,
        config_file: Path | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.kubeconfig, self.namespace, self.pool_name = kubeconfig, namespace, pool_name
        self.expected_endpoints = expected_endpoints
        self.config_file = config_file
        self.log_path = log_path
        self.pod_name = deployment_pod_name(f"{pool_name}-epp")  # the chart's Deployment name
        self.extra_args = list(extra_args)
        self.port, self.health_port, self.metrics_port = free_ports(3)
        self._child: Child | None = None

    def command(self) -> list[str]:
        cmd = [str(epp_binary()), f"--pool-name={self.pool_name}", f"--pool-namespace={self.namespace}"]
        cmd += [f"--grpc-port={self.port}", f"--grpc-health-port={self.health_port}"]
        cmd += [f"--metrics-port={self.metrics_port}", "--secure-serving=false", "--tracing=false"]
        cmd += ["--metrics-endpoint-auth=false"]
        if self.config_file is not None:
            cmd.append(f"--config-file={self.config_file}")
        return [*cmd, *self.extra_args]

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), NAMESPACE=self.namespace, POD_NAME=self.pod_name)

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start it; raises ChildError (a RuntimeError) with its last output if it exits or is not ready in time."""
        self._child = Child(
            self.command(), name="epp", env=self.env(), ready=self._ready, log_path=self.log_path, poll_interval_s=0.2
        )
        await self._child.start(timeout_s)

    async def _ready(self) -> bool:
        await grpc_health_ready(f"127.0.0.1:{self.health_port}", EXT_PROC_SERVICE)()
        seen = len(_ENDPOINT_SERIES.findall(await self.metrics_text()))
        if seen < self.expected_endpoints:
            raise NotReady(f"{seen} of {self.expected_endpoints} endpoints in its datastore")
        return True

    async def metrics_text(self) -> str:
        import aiohttp  # here: importing the harness stays cheap

        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r,
        ):
            if r.status != 200:
                raise NotReady(f"GET /metrics: HTTP {r.status}")
            return await r.text()
