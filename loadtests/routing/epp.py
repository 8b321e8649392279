"""The routing benchmark's `epp-*` arms: the reference EPP (GIE v1.5.0, harness.epp) behind our Envoy, finding the
fleet's servers as the Pods of an InferencePool that the cluster twin (`autonomic cluster-sim`) serves.

Why it exists: the reference picker discovers model servers through the Kubernetes API, not from a list of URLs.
For a fleet whose server i listens on its own loopback address (FleetGroup(distinct_hosts=True): 127.0.0.x, all on
port P, what pods look like to Kubernetes discovery) this writes a scenario with one node, one Ready Pod per server
(IP 127.0.0.x, label `app: <pool>`) and an InferencePool selecting them with targetPort P; starts the cluster twin
on it as a child process (no Prometheus); starts the EPP with the twin's kubeconfig; returns once the EPP has all N
endpoints. The benchmark then puts our Envoy in front (ext_proc -> the EPP's gRPC port, gRPC health on its health
port), as for our picker, and waits for one completion through it. A missing binary is a reason to skip.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.child import Child
from harness.epp import EppProcess
from harness.epp import missing_reason as _binary_missing
from harness.probes import poll
from loadtests.routing.peers import completion_answered

# arm -> --config-file; None: the binary's built-in default plugins (queue-scorer 2, kv-cache-utilization-scorer 2,
# prefix-cache-scorer 3 over the metrics data source), the same as the Helm chart's default-plugins.yaml. v1.5.0
# ships no precise (KV-event) prefix variant: that is llm-d's; its other shipped variant, the latency predictor,
# needs the predictor's training and prediction servers.
EPP_ARMS: dict[str, Path | None] = {"epp-default": None}
NAMESPACE = "inference"
POOL = "vllm-bench"


def missing_reason(name: str) -> str | None:
    """Why the arm cannot run here, or None."""
    if name not in EPP_ARMS:
        raise KeyError(name)
    return _binary_missing()


def scenario(hosts: list[str], port: int) -> dict[str, Any]:
    """The cluster twin's scenario: a node, a Ready Pod per server address, an InferencePool over them."""
    pods = [
        {
            "name": f"{POOL}-{i}",
            "namespace": NAMESPACE,
            "node": "node-a",
            "ip": h,
            "port": port,
            "labels": {"app": POOL},
        }
        for i, h in enumerate(hosts)
    ]
    pool: dict[str, Any] = {"name": POOL, "namespace": NAMESPACE, "selector": {"app": POOL}, "targetPorts": [port]}
    pool |= {"endpointPicker": f"{POOL}-epp", "endpointPickerPort": 9002}
    return {"namespaces": [NAMESPACE], "nodes": [{"name": "node-a"}], "pods": pods, "inferencePools": [pool]}


class EppArm:
    """The cluster twin and the EPP for one fleet; `start()` returns once the EPP has every server as an endpoint.
    Files (scenario, kubeconfig, logs) go to `workdir` as `<name>-*`."""

    def __init__(self, name: str, hosts: list[str], port: int, workdir: Path):
        self.name, self.hosts, self.port_of_servers, self.workdir = name, hosts, port, workdir
        self.kubeconfig = workdir / f"{name}-kubeconfig"
        self._cluster: Child | None = None
        self.epp = EppProcess(
            kubeconfig=self.kubeconfig,
            namespace=NAMESPACE,
            pool_name=POOL,
            expected_endpoints=len(hosts),
            config_file=EPP_ARMS[name],
            log_path=workdir / f"{name}.log",
        )

    @property
    def output(self) -> list[str]:
        return self.epp.output

    async def start(self, timeout_s: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{self.name}-cluster.yaml"
        path.write_text(yaml.safe_dump(scenario(self.hosts, self.port_of_servers), sort_keys=False))
        log = self.workdir / f"{self.name}-cluster.log"
        for f in (log, self.epp.log_path):
            if f is not None:
                f.write_bytes(b"")
        cmd = [sys.executable, "-m", "autonomic", "cluster-sim", "--scenario", str(path), "--port", "0"]
        cmd += ["--no-prometheus", "--kubeconfig", str(self.kubeconfig)]
        self._cluster = Child(cmd, name="cluster-sim", ready=r"^ready:", log_path=log)
        try:
            await self._cluster.start(timeout_s)
            await self.epp.start(timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.epp.stop()
        if self._cluster is not None:
            await self._cluster.stop()


async def wait_until_routed(url: str, model: str, timeout_s: float = 30.0) -> None:
    """Until one completion through `url` (Envoy in front of the EPP) is answered 200; TimeoutError otherwise."""

    async def probe() -> bool:
        return await completion_answered(url, model)

    problem = await poll(probe, asyncio.Event(), timeout_s, 0.5)
    if problem is not None:
        raise TimeoutError(f"no completion through the EPP after {timeout_s:g} s ({problem})")
