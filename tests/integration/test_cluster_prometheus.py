"""The cluster twin scraped by a real Prometheus (1 s scrapes, 3 s rate windows, rules every second): PSI and the
descheduler's scores rise on a node whose demand exceeds its cores and fall once its VMs have moved away
(evicted through the API, live-migrated by the twin's KubeVirt); memory pressure on an overcommitted node;
per-VM usage; scrape gaps; a clear error without a Prometheus binary."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from cluster_helpers import admin, api_client, launcher_pod, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sim.cluster.kv_objects import CPU_LOAD_FACTOR_ANNOTATION
from sim.cluster.prometheus import DEFAULT_BINARY, TelemetryError, TwinTelemetry, start_telemetry
from sim.cluster.scenario import parse_scenario
from sim.cluster.state_view import TelemetryOptions
from sim.cluster.twin import ClusterTwin

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.path.exists(DEFAULT_BINARY),
    reason="Prometheus is not installed (make prometheus)",
)
T = TypeVar("T")
K3 = "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m"
HOT = ("hot-0", "hot-1", "hot-2")
SCENARIO = {
    "namespaces": ["vms"],
    "kubevirt": {"nodeLinkBandwidth": "4Gi"},
    "nodes": [{"name": "worker-0"}, {"name": "worker-1"}, {"name": "worker-2"}, {"name": "worker-3", "memory": "16Gi"}],
    "vms": [
        # 12 vCPUs at 95% on 8 cores: about 11.4 cores wanted, cpu some about 0.45
        *({"name": n, "namespace": "vms", "cpu": 4, "memory": "4Gi", "node": "worker-0", "cpuLoad": 0.95} for n in HOT),
        {"name": "cold-1", "namespace": "vms", "cpu": 2, "memory": "2Gi", "node": "worker-1", "cpuLoad": 0.1},
        {"name": "cold-2", "namespace": "vms", "cpu": 2, "memory": "2Gi", "node": "worker-2", "cpuLoad": 0.1},
        # 2 x 8 GiB guests fully used on a 16 GiB node: memory overcommitted about 12%, memory some about 0.35
        *(
            {"name": f"mem-{i}", "namespace": "vms", "cpu": 2, "memory": "8Gi", "node": "worker-3", "cpuLoad": 0.1}
            | {"memoryLoad": 1.0}
            for i in range(2)
        ),
    ],
}
OPTIONS = TelemetryOptions(
    scrape_interval_s=1.0,
    rate_window="3s",
    smoothing_window="10s",
    cooldown_window="30s",
    rule_interval="1s",
    tick_s=0.1,
)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ClusterTwin, TwinTelemetry]]:
    scenario = parse_scenario(SCENARIO)
    with ClusterTwin(scenario, time_scale=20) as twin:
        telemetry = twin.run(start_telemetry(twin.view, dataclasses.replace(OPTIONS, load=scenario.load)))
        try:
            yield twin, telemetry
        finally:
            twin.run(telemetry.stop())


def query(telemetry: TwinTelemetry, promql: str) -> dict[str, float]:
    """Instant query -> {instance (or name for per-VM series): value}."""
    url = f"{telemetry.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    assert body["status"] == "success", body
    out = {}
    for r in body["data"]["result"]:
        key = r["metric"].get("name") or r["metric"].get("instance", "")
        out[key] = float(r["value"][1])
    return out


def eventually(probe: Callable[[], T | None], *, what: str, timeout: float = 60.0) -> T:
    """Poll Prometheus every 0.2 s until `probe` returns something truthy (a bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def psi(telemetry: TwinTelemetry, kind: str = "cpu") -> dict[str, float]:
    return query(telemetry, f"rate(node_pressure_{kind}_waiting_seconds_total[3s])")


def test_pressure_and_scores_rise_on_the_hot_node_and_fall_after_its_vms_move(
    stack: tuple[ClusterTwin, TwinTelemetry],
) -> None:
    twin, telemetry = stack

    def hot() -> tuple[dict[str, float], dict[str, float]] | None:
        p, k3 = psi(telemetry), query(telemetry, K3)
        busy = query(telemetry, "descheduler:nodeutilization:cpu:avg1m").get("worker-0", 0)
        rule = query(telemetry, "descheduler:nodepressure:cpu:avg1m").get("worker-0", 0)
        ok = p.get("worker-0", 0) > 0.3 and rule > 0.3 and busy > 0.95 and k3.get("worker-0", 0) >= 0.9
        return (p, k3) if ok and len(k3) == 4 else None

    before_psi, before_k3 = eventually(hot, what="PSI and k3 score up on worker-0")
    assert max(before_psi[n] for n in ("worker-1", "worker-2")) < 0.05
    assert max(before_k3[n] for n in ("worker-1", "worker-2")) < 0.2

    with api_client(twin) as api:
        core = client.CoreV1Api(api)
        for vm in HOT[:2]:
            pod = launcher_pod(core, "vms", vm)
            with pytest.raises(ApiException) as exc:
                core.create_namespaced_pod_eviction(
                    pod.metadata.name, "vms", client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name))
                )
            assert exc.value.status == 429 and "Eviction triggered evacuation" in exc.value.body

    def moved() -> bool:
        nodes = {v.name: v.node for v in twin.view.vmis() if not v.migrating}
        return all(nodes.get(vm) not in (None, "worker-0") for vm in HOT[:2])

    wait_for(moved, timeout=60, what="two hot VMs live-migrated off worker-0")  # the twin's view: cheap to poll

    def relieved() -> tuple[dict[str, float], dict[str, float]] | None:
        p, k3 = psi(telemetry), query(telemetry, K3)
        return (p, k3) if p.get("worker-0", 1) < 0.05 and k3.get("worker-0", 1) < 0.5 else None

    after_psi, after_k3 = eventually(relieved, what="PSI and k3 score down on worker-0")
    assert after_psi["worker-0"] < before_psi["worker-0"] / 5
    assert after_k3["worker-0"] < before_k3["worker-0"] - 0.5
    assert max(after_psi.values()) < 0.1  # the VMs' new nodes have room for them


def test_memory_overcommit_shows_memory_pressure(stack: tuple[ClusterTwin, TwinTelemetry]) -> None:
    _, telemetry = stack

    def memory() -> dict[str, float] | None:
        rule = query(telemetry, "descheduler:nodepressure:memory:avg1m")
        return rule if rule.get("worker-3", 0) > 0.2 else None

    rule = eventually(memory, what="memory pressure on worker-3")
    assert psi(telemetry, "memory")["worker-3"] == pytest.approx(rule["worker-3"], rel=0.2)
    assert query(telemetry, "descheduler:nodeutilization:memory:avg1m")["worker-3"] > 0.99
    full = query(telemetry, "rate(node_pressure_memory_stalled_seconds_total[3s])")["worker-3"]
    assert 0 < full < rule["worker-3"]
    assert query(telemetry, "rate(node_pressure_io_waiting_seconds_total[3s])")["worker-3"] > 0.1  # swap-in
    assert all(v == 0 for n, v in rule.items() if n != "worker-3")


def test_per_vm_usage_hotspot_knob_and_kube_state_metrics(stack: tuple[ClusterTwin, TwinTelemetry]) -> None:
    twin, telemetry = stack
    usage = eventually(
        lambda: query(telemetry, "rate(kubevirt_vmi_cpu_usage_seconds_total[3s])") or None, what="per-VM usage"
    )
    assert usage["cold-1"] == pytest.approx(0.2, rel=0.1)  # 2 vCPUs at 10%
    assert query(telemetry, 'kubevirt_vmi_memory_used_bytes{name="mem-0"}') == {"mem-0": 8 * 2**30}
    roles = query(telemetry, 'label_replace(kube_node_role{role="worker"}, "instance", "$1", "node", "(.+)")')
    assert sorted(roles) == ["worker-0", "worker-1", "worker-2", "worker-3"]
    # the run-time hotspot knob: the VMI's annotation changes, and so does its demand (read from the model)
    assert admin(twin, "POST", "load/hotspot", {"vms": ["vms/cold-1"], "cpuFactor": 5}) == {"vmis": ["vms/cold-1"]}
    try:
        with api_client(twin) as api:
            vmi = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "kubevirt.io", "v1", "vms", "virtualmachineinstances", "cold-1"
            )
        assert vmi["metadata"]["annotations"][CPU_LOAD_FACTOR_ANNOTATION] == "5"
        sample = twin.call(telemetry.telemetry.update)
        assert next(v.cpu_cores for v in sample.vms if v.name == "cold-1") == pytest.approx(1.0)
    finally:
        admin(twin, "POST", "load/hotspot", {"vms": ["vms/cold-1"], "cpuFactor": 1})


def test_scrape_gaps_from_the_fault_knob(stack: tuple[ClusterTwin, TwinTelemetry]) -> None:
    twin, telemetry = stack

    def up_is(value: float) -> bool:
        return query(telemetry, 'up{job="node-exporter",instance="worker-2"}').get("worker-2") == value

    try:
        eventually(lambda: up_is(1), what="worker-2 scraped")
        for mode in ("error", "stall"):
            admin(twin, "PUT", "faults/scrape", {"node": "worker-2", "mode": mode})
            eventually(lambda: up_is(0), what=f"worker-2 down ({mode})")
            assert admin(twin, "GET", "state")["faults"]["scrape"] == {"worker-2": mode}
            admin(twin, "PUT", "faults/scrape", {"node": "worker-2", "mode": "none"})
        eventually(lambda: up_is(1), what="worker-2 scraped again")
    finally:
        admin(twin, "POST", "faults/reset")


def test_missing_prometheus_binary_names_make_prometheus(stack: tuple[ClusterTwin, TwinTelemetry]) -> None:
    twin, _ = stack
    with pytest.raises(TelemetryError, match="make prometheus"):
        twin.run(start_telemetry(twin.view, TelemetryOptions(prometheus_binary="/nonexistent/prometheus")))
