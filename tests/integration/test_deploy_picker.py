"""The deploy/ objects working together, on the twins: the rendered standalone-envoy overlay's InferencePool is
created in the cluster twin, the picker runs with the rendered Deployment's own args (TLS on) and ConfigMap, and the
real Envoy runs the rendered Envoy config; a request sent to Envoy lands on a pod of the pool.

What is changed for loopback, and only that: addresses and ports (0.0.0.0 -> 127.0.0.1, fixed ports -> free ones,
the picker Service's DNS name -> 127.0.0.1), the in-cluster credentials -> the twin's kubeconfig, and the pool's
target port -> a port free on every pod address. Pods get distinct 127.0.0.x IPs (docs/picker.md, "Discovery on
loopback").
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cluster_helpers import api_client
from kubernetes import client

from harness.child import Child
from harness.envoy import envoy_binary
from harness.netutil import free_port, port_free
from harness.picker import PickerProcess
from harness.probes import http_ready
from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin
from sim.fleet.profile import load_profile
from sim.fleet.server import ModelServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from deploy_helpers import DEPLOY, render

OVERLAY = DEPLOY / "overlays/standalone-envoy"


def _objects() -> dict[str, dict[str, Any]]:
    objects = copy.deepcopy(render(OVERLAY))  # render() is cached: change copies only
    by_kind = {o["kind"]: o for o in objects if o["kind"] in ("InferencePool",)}
    for o in objects:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "autonomic-picker":
            by_kind["PickerDeployment"] = o
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("autonomic-picker-config"):
            by_kind["PickerConfig"] = o
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("autonomic-envoy"):
            by_kind["EnvoyConfig"] = o
    return by_kind


def _loopback_ips(n: int) -> tuple[list[str], int]:
    base = random.Random().randrange(2, 250 - n)
    for _ in range(50):
        port = free_port()
        ips = [f"127.0.0.{base + i}" for i in range(n)]
        if all(port_free(port, ip) for ip in ips):
            return ips, port
    raise RuntimeError("no free port on the loopback addresses")


def _pod(name: str, namespace: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": "node-a", "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
            "status": status}  # fmt: skip


def _picker_args(deployment: dict[str, Any], config: Path, kubeconfig: Path, ports: dict[str, int]) -> list[str]:
    """The container's args as the kubelet would pass them, then the loopback substitutions."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    env["POD_NAMESPACE"] = deployment["metadata"]["namespace"]  # the fieldRefs
    env["POD_IP"] = "127.0.0.1"
    args = [re.sub(r"\$\((\w+)\)", lambda m: str(env[m.group(1)]), a) for a in container["args"]]
    assert args[0] == "picker"
    swap = {
        "--host": "127.0.0.1",
        "--config": str(config),
        "--port": str(ports["grpc"]),
        "--health-port": str(ports["health"]),
        "--metrics-port": str(ports["metrics"]),
        "--peer-port": str(ports["peers"]),
        # a name that resolves to this replica only: it leaves itself out and has no peer (the other replica of the
        # Deployment is not started here; tests/integration/test_picker_replicas.py runs two)
        "--peers": f"localhost:{ports['peers']}",
    }
    out = []
    for arg in args[1:]:
        flag = arg.split("=", 1)[0]
        out.append(f"{flag}={swap[flag]}" if flag in swap else arg)
    return [*out, "--kubeconfig", str(kubeconfig), "--scrape-interval", "0.1"]


def _envoy_config(text: str, picker_port: int, listen: int, admin: int) -> str:
    config = yaml.safe_load(text)
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["address"] == "0.0.0.0"
    listener.update(address="127.0.0.1", port_value=listen)
    picker = next(c for c in config["static_resources"]["clusters"] if c["name"] == "picker")
    address = picker["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address["address"].startswith("autonomic-picker-replicas.") and address["port_value"] == 9002
    address.update(address="127.0.0.1", port_value=picker_port)
    assert picker["transport_socket"]["name"] == "envoy.transport_sockets.tls"  # kept: ext_proc over TLS
    return yaml.safe_dump(config)


@contextlib.asynccontextmanager
async def _envoy(config: str, workdir: Path, admin: int) -> AsyncIterator[None]:
    """Envoy on the deploy manifest's own config (not one rendered from EnvoyOptions), ready at its admin /ready."""
    path = workdir / "envoy.yaml"
    path.write_text(config)
    argv = [envoy_binary(), "-c", str(path), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
    ready = http_ready(f"http://127.0.0.1:{admin}/ready")
    async with Child(argv, name="envoy", ready=ready, log_path=workdir / "envoy.log"):
        yield


async def test_rendered_pool_picker_and_envoy_route_a_request(tmp_path: Path):
    objs = _objects()
    pool = objs["InferencePool"]
    namespace, labels = pool["metadata"]["namespace"], pool["spec"]["selector"]["matchLabels"]
    ips, port = _loopback_ips(3)
    pool["spec"]["targetPorts"] = [{"number": port}]
    members = {f"{ips[0]}:{port}", f"{ips[1]}:{port}"}
    resources = [_pod("vllm-0", namespace, ips[0], labels), _pod("vllm-1", namespace, ips[1], labels)]
    resources.append(_pod("other-0", namespace, ips[2], {"app": "not-in-the-pool"}))
    scenario = parse_scenario({"namespaces": [namespace], "nodes": [{"name": "node-a"}], "resources": resources})
    config = tmp_path / "picker-config.yaml"
    config.write_text(objs["PickerConfig"]["data"]["config.yaml"])
    profile = load_profile()
    servers = [ModelServer(index=i, profile=profile, host=ip, port=port, time_scale=10) for i, ip in enumerate(ips)]
    with ClusterTwin(scenario) as twin:
        custom = client.CustomObjectsApi(api_client(twin))
        group, version = pool["apiVersion"].split("/")
        await asyncio.to_thread(
            custom.create_namespaced_custom_object, group, version, namespace, "inferencepools", pool
        )
        for s in servers:
            await s.start()
        ports = {"grpc": free_port(), "health": free_port(), "metrics": free_port(), "peers": free_port()}
        args = _picker_args(objs["PickerDeployment"], config, twin.kubeconfig_path, ports)
        picker = PickerProcess([], extra_args=args)
        picker.port, picker.health_port, picker.metrics_port = ports["grpc"], ports["health"], ports["metrics"]
        try:
            await picker.start()
            ready = picker.ready_line
            assert "endpoints=2" in ready and ready.endswith(f"tls=self-signed peers={ports['peers']}"), ready
            listen, admin = free_port(), free_port()
            envoy_config = _envoy_config(objs["EnvoyConfig"]["data"]["envoy.yaml"], ports["grpc"], listen, admin)
            async with _envoy(envoy_config, tmp_path, admin), aiohttp.ClientSession() as http:
                for i in range(6):
                    body = {"model": servers[0].model_name, "prompt": f"hello {i}", "max_tokens": 2}
                    async with http.post(f"http://127.0.0.1:{listen}/v1/completions", json=body) as r:
                        assert r.status == 200, await r.text()
            served = {f"{s.host}:{port}": len(s.finished_log) for s in servers}
            assert sum(served.values()) == 6, served
            assert {a for a, n in served.items() if n} <= members, served  # the pool's pods only, never the other
        finally:
            await picker.stop()
            for s in servers:
                await s.stop()
