"""A VMI no node fits gets its virt-launcher pod at once, and the pod stays Pending (PodScheduled False, reason
Unschedulable, the scheduler's message) while the VMI is Scheduling, as with virt-controller and kube-scheduler. Once
room frees up, the same pod is bound and runs and the VMI runs there; a pending pod deleted by a client fails its VMI,
and the VM makes a new one. Checked with the official client and kubectl against a real twin."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cluster_helpers import api_client, wait_for
from kubernetes import client

from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin

KV = ("kubevirt.io", "v1")
KUBECTL = shutil.which("kubectl")
# two nodes with 30.5 GiB allocatable each; a 20 GiB VM on each leaves about 10 GiB: a 16 GiB VM fits nowhere
SCENARIO = {
    "nodes": [{"name": "worker-0", "cpu": "8", "memory": "32Gi"}, {"name": "worker-1", "cpu": "8", "memory": "32Gi"}],
    "vms": [
        {"name": "big-0", "namespace": "vms", "cpu": 2, "memory": "20Gi", "node": "worker-0"},
        {"name": "big-1", "namespace": "vms", "cpu": 2, "memory": "20Gi", "node": "worker-1"},
        {"name": "waiting", "namespace": "vms", "cpu": 2, "memory": "16Gi", "virtualMachine": True},
    ],
}
MESSAGE = "0/2 nodes are available: 2 Insufficient memory."


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(parse_scenario(SCENARIO), time_scale=20, kubevirt=KubeVirtConfig(vm_restart_s=1.0)) as t:
        yield t


@pytest.fixture(scope="module")
def core(twin: ClusterTwin) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(twin))


def _launchers(core: client.CoreV1Api, vm: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod("vms", label_selector=f"kubevirt.io=virt-launcher,vm.kubevirt.io/name={vm}").items


def _vmi(twin: ClusterTwin, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api_client(twin)).get_namespaced_custom_object(
        *KV, "vms", "virtualmachineinstances", name
    )


def _condition(obj: Any, kind: str) -> Any:
    conditions = obj["status"]["conditions"] if isinstance(obj, dict) else obj.status.conditions
    return next(c for c in conditions if (c["type"] if isinstance(c, dict) else c.type) == kind)


def test_unschedulable_vmi_has_a_pending_launcher_pod(twin: ClusterTwin, core: client.CoreV1Api) -> None:
    pods = wait_for(lambda: _launchers(core, "waiting"), what="the launcher pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod.status.phase == "Pending" and pod.spec.node_name is None and pod.status.pod_ip is None
    scheduled = _condition(pod, "PodScheduled")
    assert (scheduled.status, scheduled.reason, scheduled.message) == ("False", "Unschedulable", MESSAGE)
    assert pod.spec.containers[0].resources.requests["memory"]  # it asks for what the scheduler could not find
    vmi = _vmi(twin, "waiting")
    assert vmi["status"]["phase"] == "Scheduling" and "nodeName" not in vmi["status"]
    copied = _condition(vmi, "PodScheduled")
    assert (copied["status"], copied["reason"], copied["message"]) == ("False", "Unschedulable", MESSAGE)
    assert _condition(vmi, "Ready")["status"] == "False"
    vm = client.CustomObjectsApi(api_client(twin)).get_namespaced_custom_object(
        *KV, "vms", "virtualmachines", "waiting"
    )
    assert vm["status"]["printableStatus"] == "ErrorUnschedulable"


def test_pending_pod_is_found_as_clients_look_for_it(twin: ClusterTwin, core: client.CoreV1Api) -> None:
    unassigned = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=").items  # the scheduler's query
    assert [p.metadata.labels["vm.kubevirt.io/name"] for p in unassigned] == ["waiting"]
    pending = core.list_namespaced_pod("vms", field_selector="status.phase=Pending").items
    assert [p.metadata.name for p in pending] == [p.metadata.name for p in unassigned]
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (Debian package `kubectl`)")
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", str(twin.kubeconfig_path), "get", "pods", "-n", "vms", "-o", "wide"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    row = next(line.split() for line in out.stdout.splitlines() if "virt-launcher-waiting-" in line)
    assert row[1:3] == ["0/1", "Pending"] and row[5:7] == ["<none>", "<none>"]  # no IP, no node


def test_pod_is_bound_once_room_frees_up(twin: ClusterTwin, core: client.CoreV1Api) -> None:
    pending = wait_for(lambda: _launchers(core, "waiting"), what="the launcher pod")[0]
    blocker = _launchers(core, "big-1")[0]
    core.delete_namespaced_pod(blocker.metadata.name, "vms")  # big-1 has no VM: it is gone for good
    running = wait_for(
        lambda: next((p for p in _launchers(core, "waiting") if p.status.phase == "Running"), None),
        what="the pending pod to run",
    )
    assert running.metadata.name == pending.metadata.name and running.metadata.uid == pending.metadata.uid
    assert running.spec.node_name == "worker-1" and running.status.pod_ip
    assert _condition(running, "PodScheduled").status == "True" and _condition(running, "Ready").status == "True"
    vmi = wait_for(lambda: (v := _vmi(twin, "waiting"))["status"]["phase"] == "Running" and v, what="the VMI to run")
    assert vmi["status"]["nodeName"] == "worker-1"
    assert vmi["status"]["activePods"] == {running.metadata.uid: "worker-1"}
    assert all(c["type"] != "PodScheduled" for c in vmi["status"]["conditions"])
    assert _condition(vmi, "Ready")["status"] == "True"


def test_deleted_pending_pod_fails_the_vmi_and_the_vm_restarts_it() -> None:
    scenario = parse_scenario({**SCENARIO, "vms": [*SCENARIO["vms"][:2], {**SCENARIO["vms"][2], "name": "again"}]})
    with ClusterTwin(scenario, time_scale=20, kubevirt=KubeVirtConfig(vm_restart_s=1.0)) as twin:
        core = client.CoreV1Api(api_client(twin))
        first = wait_for(lambda: _launchers(core, "again"), what="the launcher pod")[0]
        old_uid = _vmi(twin, "again")["metadata"]["uid"]
        core.delete_namespaced_pod(first.metadata.name, "vms")
        wait_for(lambda: _vmi(twin, "again")["metadata"]["uid"] != old_uid, what="the VM to recreate its VMI")
        again = wait_for(
            lambda: [p for p in _launchers(core, "again") if p.metadata.name != first.metadata.name],
            what="a new pending launcher pod",
        )
        assert again[0].status.phase == "Pending" and _condition(again[0], "PodScheduled").reason == "Unschedulable"
        assert _vmi(twin, "again")["status"]["phase"] == "Scheduling"
