"""InferencePool discovery and DRA hints on the twins: the cluster twin serves the pool, the pods and the DRA
objects to the official client; fleet-twin servers listen on the pods' IPs (distinct 127.0.0.x addresses, so each
pod really has its own IP, as in a cluster: docs/picker.md, "Discovery on loopback").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cluster_helpers import admin, api_client
from kubernetes import client

from harness.netutil import free_port, port_free
from harness.picker import PickerProcess
from proto.autonomic.picker.v1 import picker_pb2 as pb
from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc
from scorer.config import load_config
from scorer.service import PickerOptions, RunningPicker, run_picker
from scorer.sources.inferencepool import InferencePoolSource, PoolRef
from scorer.types import Endpoint
from sim.cluster.resources import PODS
from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin
from sim.fleet.profile import load_profile
from sim.fleet.server import ModelServer

NS, POOL, DRIVER, NODE = "llm", "llama", "gpu.nvidia.com", "node-a"
DRA_CONFIG = Path(__file__).resolve().parents[2] / "scorer" / "dra-config.yaml"
CAPACITY_ONLY = """
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: device-health-filter}
- {type: device-capacity-scorer, parameters: {basis: device}}
- {type: max-score-picker}
schedulingProfiles:
- {name: default, plugins: [{pluginRef: device-health-filter}, {pluginRef: device-capacity-scorer, weight: 1},
                            {pluginRef: max-score-picker}]}
"""


def loopback_ips(n: int) -> tuple[list[str], int]:
    """n distinct 127.0.0.x addresses (all loopback on Linux) sharing one free port: the pool's target port."""
    base = random.Random().randrange(2, 250 - n)
    for _ in range(50):
        port = free_port()
        ips = [f"127.0.0.{base + i}" for i in range(n)]
        if all(port_free(port, ip) for ip in ips):
            return ips, port
    raise RuntimeError("no free port on the loopback addresses")


def pod(name: str, ip: str, *, ready: bool = True, claim: str | None = None, app: str = "vllm") -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": NODE, "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]}
    status: dict[str, Any] = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if claim:
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": "vllm-gpu"}]
        status["resourceClaimStatuses"] = [{"name": "gpu", "resourceClaimName": claim}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": spec, "status": status}  # fmt: skip


def gpu(name: str, sms: int, memory: str, *, mig: str | None = None, taint: bool = False) -> dict[str, Any]:
    attrs: dict[str, Any] = {"type": {"string": "mig" if mig else "gpu"}, "productName": {"string": "NVIDIA H100"}}
    if mig:
        attrs["profile"] = {"string": mig}
    device: dict[str, Any] = {
        "name": name,
        "attributes": attrs,
        "capacity": {"memory": {"value": memory}, "multiprocessors": {"value": str(sms)}},
    }
    if taint:
        device["taints"] = [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}]
    return device


def resource_slice(devices: list[dict[str, Any]], generation: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{NODE}-gpu-g{generation}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": NODE,
            "pool": {"name": NODE, "generation": generation, "resourceSliceCount": 1},
            "devices": devices,
        },
    }


def claim(name: str, device: str) -> dict[str, Any]:
    result = {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": device}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}},
        "status": {"allocation": {"devices": {"results": [result]}}},
    }


def twin_for(port: int, resources: list[dict[str, Any]], **kwargs: Any) -> ClusterTwin:
    scenario = parse_scenario(
        {
            "namespaces": [NS],
            "nodes": [{"name": NODE}],
            "inferencePools": [{"name": POOL, "namespace": NS, "selector": {"app": "vllm"}, "targetPorts": [port]}],
            "resources": resources,
        }
    )
    return ClusterTwin(scenario, **kwargs)


@contextlib.asynccontextmanager
async def servers(ips: list[str], port: int) -> AsyncIterator[list[ModelServer]]:
    """Fleet-twin model servers, one per pod IP, all on the pool's target port."""
    profile = load_profile()
    started = [ModelServer(index=i, profile=profile, host=ip, port=port, time_scale=10) for i, ip in enumerate(ips)]
    try:
        for s in started:
            await s.start()
        yield started
    finally:
        for s in started:
            await s.stop()


class Updates:
    """The endpoint sets handed to `on_endpoints`, in order; `next()` is the set after the next watch event."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Endpoint]] = asyncio.Queue()

    def __call__(self, endpoints: list[Endpoint]) -> None:
        self.queue.put_nowait(endpoints)

    async def next(self) -> set[str]:
        endpoints = await asyncio.wait_for(self.queue.get(), 30)  # a bound so a failure does not hang
        return {e.address for e in endpoints}


async def test_pool_membership_follows_pods_within_one_watch_event(caplog: pytest.LogCaptureFixture) -> None:
    """Every change below must show in the *first* endpoint set handed over after it (one watch event), and changes
    that do not matter (a not-ready pod, a pod outside the selector) must hand over nothing: the next set seen is
    the one of the next change that matters."""
    caplog.set_level(logging.INFO, "autonomic.picker.watch")
    ips, port = loopback_ips(4)
    with twin_for(port, [pod("vllm-0", ips[0])], event_window=3) as twin, api_client(twin) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        updates = Updates()
        source = InferencePoolSource(api, NS, POOL, updates, watch_timeout_s=30)
        try:
            assert {e.address for e in await source.start()} == {f"{ips[0]}:{port}"}
            a0, a1, a2 = (f"{ip}:{port}" for ip in ips[:3])

            await asyncio.to_thread(core.create_namespaced_pod, NS, pod("vllm-1", ips[1]))
            assert await updates.next() == {a0, a1}
            await asyncio.to_thread(core.create_namespaced_pod, NS, pod("vllm-2", ips[2], ready=False))
            await asyncio.to_thread(core.create_namespaced_pod, NS, pod("other", ips[3], app="other"))
            ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
            await asyncio.to_thread(core.patch_namespaced_pod_status, "vllm-2", NS, ready)
            assert await updates.next() == {a0, a1, a2}
            not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
            await asyncio.to_thread(core.patch_namespaced_pod_status, "vllm-1", NS, not_ready)
            assert await updates.next() == {a0, a2}
            await asyncio.to_thread(core.delete_namespaced_pod, "vllm-2", NS)
            assert await updates.next() == {a0}

            ports = {"spec": {"targetPorts": [{"number": port}, {"number": port + 1}]}}
            await asyncio.to_thread(custom.patch_namespaced_custom_object, *POOL_PATH, POOL, ports)
            assert await updates.next() == {a0, f"{ips[0]}:{port + 1}"}

            # resume after a dropped watch without listing again; list again when the version expired (410)
            assert source.pods.relists == 1
            await asyncio.to_thread(admin, twin, "POST", "watches/drop")
            await asyncio.to_thread(core.patch_namespaced_pod_status, "vllm-1", NS, ready)
            assert await updates.next() == {a0, a1, f"{ips[0]}:{port + 1}", f"{ips[1]}:{port + 1}"}
            assert source.pods.relists == 1
            await asyncio.to_thread(admin, twin, "PUT", "faults/api", {"latencyMs": 1000})
            await asyncio.to_thread(admin, twin, "POST", "watches/drop")
            for i in range(4):  # more changes than the window keeps, while the re-watch is held back
                await asyncio.to_thread(_label, twin, "other", str(i))
            await asyncio.to_thread(twin.call, lambda: twin.view.store.delete(PODS, NS, "vllm-1"))
            await asyncio.to_thread(admin, twin, "POST", "faults/reset")
            assert await updates.next() == {a0, f"{ips[0]}:{port + 1}"}
            assert source.pods.relists >= 2
            assert "pods" in {getattr(r, "kind", None) for r in caplog.records if "expired" in r.getMessage()}

            await asyncio.to_thread(custom.delete_namespaced_custom_object, *POOL_PATH, POOL)
            assert await updates.next() == set()
            assert source.problem == "InferencePool not found"
        finally:
            source.stop()


POOL_PATH = ("inference.networking.k8s.io", "v1", NS, "inferencepools")


def _label(twin: ClusterTwin, name: str, value: str) -> None:
    """A change made inside the twin (not through the API, whose answers the latency fault holds back)."""

    def relabel(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("labels", {})["rev"] = value

    twin.call(lambda: twin.view.store.mutate(PODS, NS, name, relabel))


@contextlib.asynccontextmanager
async def picker_on_pool(twin: ClusterTwin, config: str) -> AsyncIterator[tuple[RunningPicker, pb_grpc.PickerStub]]:
    ready: asyncio.Queue[RunningPicker] = asyncio.Queue()
    stop = asyncio.Event()
    with api_client(twin) as api:
        opts = PickerOptions(
            config=load_config(config),
            endpoints=[],
            pool=PoolRef(api, NS, POOL),
            port=0,
            health_port=0,
            metrics_port=0,
            scrape_interval_s=0.05,
        )
        task = asyncio.create_task(run_picker(opts, stop, ready.put_nowait))
        try:
            running = await asyncio.wait_for(ready.get(), 30)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.extproc.port}") as channel:
                yield running, pb_grpc.PickerStub(channel)
        finally:
            stop.set()
            await task


def body(model: str, i: int) -> bytes:
    return json.dumps({"model": model, "prompt": f"request {i}: " + "word " * (i % 7), "max_tokens": 8}).encode()


async def test_a_large_gpu_takes_proportionally_more_than_a_small_mig_slice_and_a_tainted_one_none() -> None:
    """Three pods on one node: a whole H100 (132 SMs), a 2g.20gb MIG slice (32 SMs) and a whole H100 whose XID
    taint says NoSchedule. Requests held in flight (picked, not completed) are the same load for everyone, so the
    capacity scorer must split them 132:32 and the health filter must give the tainted one nothing."""
    ips, port = loopback_ips(3)
    devices = [gpu("gpu-0", 132, "80Gi"), gpu("gpu-1-mig-2g20gb", 32, "20Gi", mig="2g.20gb")]
    devices.append(gpu("gpu-2", 132, "80Gi", taint=True))
    objects = [resource_slice(devices, generation=1)]
    for i, device in enumerate(["gpu-0", "gpu-1-mig-2g20gb", "gpu-2"]):
        objects += [claim(f"vllm-{i}-gpu", device), pod(f"vllm-{i}", ips[i], claim=f"vllm-{i}-gpu")]
    big, small, tainted = (f"{ip}:{port}" for ip in ips)
    with twin_for(port, objects) as twin:
        async with servers(ips, port) as fleet, picker_on_pool(twin, CAPACITY_ONLY) as (running, stub):
            members = {s.endpoint.address: s.endpoint for s in running.director.endpoints()}
            assert set(members) == {big, small, tainted}
            assert members[small].hints is not None and members[small].hints.devices[0].mig_profile == "2g.20gb"
            model = fleet[0].model_name
            await _until_candidates(stub, model, {big, small})
            n = 41
            picks = [(await stub.Pick(pb.PickRequest(body=body(model, i)))).endpoint for i in range(n)]
            counts = {a: picks.count(a) for a in (big, small, tainted)}
            assert counts[tainted] == 0
            assert abs(counts[big] - n * 132 / 164) <= 1 and abs(counts[small] - n * 32 / 164) <= 1, counts


async def test_the_shipped_dra_profile_through_the_cli_follows_taints(tmp_path: Path) -> None:
    """`autonomic picker --pool ... --kubeconfig ... --config scorer/dra-config.yaml` as a process: the tainted
    device's endpoint gets no traffic; a new slice generation that clears the taint brings it back, and tainting
    another device takes that one out."""
    ips, port = loopback_ips(2)
    objects = [resource_slice([gpu("gpu-0", 132, "80Gi"), gpu("gpu-1", 132, "80Gi", taint=True)], generation=1)]
    for i in range(2):
        objects += [claim(f"vllm-{i}-gpu", f"gpu-{i}"), pod(f"vllm-{i}", ips[i], claim=f"vllm-{i}-gpu")]
    healthy, tainted = (f"{ip}:{port}" for ip in ips)
    with twin_for(port, objects) as twin:
        async with servers(ips, port) as fleet:
            args = ["--pool", POOL, "--pool-namespace", NS, "--kubeconfig", str(twin.kubeconfig_path)]
            picker = PickerProcess([], config=DRA_CONFIG, scrape_interval_s=0.05, extra_args=args)
            await picker.start()
            try:
                assert "endpoints=2" in picker.ready_line
                model = fleet[0].model_name
                async with grpc.aio.insecure_channel(f"127.0.0.1:{picker.port}") as channel:
                    stub = pb_grpc.PickerStub(channel)
                    await _until_candidates(stub, model, {healthy})
                    assert await _served(stub, model, 20) == {healthy: 20}

                    untaint = resource_slice([gpu("gpu-0", 132, "80Gi"), gpu("gpu-1", 132, "80Gi")], generation=2)
                    await asyncio.to_thread(client.ResourceV1Api(api_client(twin)).create_resource_slice, untaint)
                    await _until_candidates(stub, model, {healthy, tainted})
                    taint0 = resource_slice([gpu("gpu-0", 132, "80Gi", taint=True), gpu("gpu-1", 132, "80Gi")], 3)
                    await asyncio.to_thread(client.ResourceV1Api(api_client(twin)).create_resource_slice, taint0)
                    await _until_candidates(stub, model, {tainted})
                    assert await _served(stub, model, 20) == {tainted: 20}
            finally:
                await picker.stop()


async def _served(stub: pb_grpc.PickerStub, model: str, n: int) -> dict[str, int]:
    """Pick and complete n requests; where each went."""
    counts: dict[str, int] = {}
    for i in range(n):
        picked = await stub.Pick(pb.PickRequest(body=body(model, i)))
        counts[picked.endpoint] = counts.get(picked.endpoint, 0) + 1
        await stub.Complete(pb.CompleteRequest(request_id=picked.request_id, status=200))
    return counts


async def _until_candidates(stub: pb_grpc.PickerStub, model: str, expected: set[str]) -> None:
    """Poll Explain until exactly `expected` survive the filters (a generous bound, not a timing assertion)."""
    seen: set[str] = set()
    for _ in range(600):
        explained = await stub.Explain(pb.PickRequest(body=body(model, 0)))
        seen = {e.endpoint for e in explained.endpoints}
        if seen == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"candidates stayed {sorted(seen)}, expected {sorted(expected)}")
