"""`cluster-sim` with node shapes serves the generated cluster to the official client: the nodes with their shape,
every VMI Running on a node, memory requests within each node's allocatable at the asked fill; an infeasible fill
is refused before anything starts; a scenario file's `generate:` makes a mix of shapes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import AUTONOMIC, read_until_ready
from kubernetes import client, config

from sim.cluster import quantity
from sim.cluster.cluster_shape import FLAVOR_LABEL

pytestmark = pytest.mark.skipif(not AUTONOMIC.exists(), reason="the autonomic console script is not installed")


def _serve(args: list[str], kubeconfig: Path) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [str(AUTONOMIC), "cluster-sim", *args, "--port", "0", "--no-prometheus", "--kubeconfig", str(kubeconfig)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, read_until_ready(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cluster(kubeconfig: Path) -> tuple[list[Any], list[dict[str, Any]], list[Any]]:
    api = config.new_client_from_config(str(kubeconfig))
    try:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        nodes = core.list_node().items
        vmis: Any = custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachineinstances")
        pods = core.list_pod_for_all_namespaces(label_selector="kubevirt.io=virt-launcher").items
        return nodes, vmis["items"], pods
    finally:
        api.close()


def test_cluster_sim_with_shapes_serves_the_nodes_and_running_vmis(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    proc, lines = _serve(
        ["--nodes", "6", "--vms", "150", "--node-cpus", "64", "--node-memory-gib", "512", "--memory-fill", "0.85"], kc
    )
    try:
        assert any(line.startswith("cluster: 6 x 64 cores / 512 GiB; 150 VMs;") for line in lines), lines
        assert any("pending_vms 0" in line for line in lines)
        nodes, vmis, pods = _cluster(kc)
    finally:
        _stop(proc)
    assert sorted(n.metadata.name for n in nodes) == sorted(f"worker-{i}" for i in range(6))
    assert {(n.status.capacity["cpu"], n.status.capacity["memory"]) for n in nodes} == {("64", "512Gi")}
    assert len(vmis) == 150 and all(v["status"]["phase"] == "Running" and v["status"]["nodeName"] for v in vmis)
    assert all(FLAVOR_LABEL in v["metadata"]["labels"] for v in vmis)
    allocatable = {n.metadata.name: quantity.bytes_(n.status.allocatable["memory"]) for n in nodes}
    requested = dict.fromkeys(allocatable, 0)
    for pod in pods:  # what the scheduler counts: the launcher pods' memory requests
        assert pod.status.phase == "Running"
        requested[pod.spec.node_name] += sum(
            quantity.bytes_(c.resources.requests["memory"]) for c in pod.spec.containers
        )
    assert len(pods) == 150 and all(requested[n] <= allocatable[n] for n in allocatable)
    assert sum(requested.values()) / sum(allocatable.values()) == pytest.approx(0.85, abs=0.01)


def test_cluster_sim_refuses_an_infeasible_fill_naming_the_flag(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(AUTONOMIC), "cluster-sim", "--nodes", "2", "--vms", "10", "--memory-fill", "0.85", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stderr.startswith("error: --memory-fill: a memory fill of 0.85 with 10 VMs")


def test_cluster_sim_scenario_generate_makes_a_mix_of_shapes(tmp_path: Path) -> None:
    scenario = tmp_path / "mix.yaml"
    scenario.write_text(
        "generate:\n"
        "  nodes:\n"
        "    - {count: 3, cpu: 64, memory: 512Gi}\n"
        "    - {count: 2, cpu: 128, memory: 1Ti}\n"
        "  memoryFill: 0.8\n"
    )
    kc = tmp_path / "kubeconfig"
    proc, lines = _serve(["--scenario", str(scenario)], kc)
    try:
        nodes, vmis, _ = _cluster(kc)
    finally:
        _stop(proc)
    shapes = sorted((n.status.capacity["cpu"], n.status.capacity["memory"]) for n in nodes)
    assert shapes == [("128", "1Ti")] * 2 + [("64", "512Gi")] * 3
    assert vmis and all(v["status"]["phase"] == "Running" for v in vmis)
    assert any("pending_vms 0" in line for line in lines)
