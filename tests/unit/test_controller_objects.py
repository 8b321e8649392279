"""Kubernetes and KubeVirt objects -> the planner's snapshot (controller/sources/objects.py), on hand-written
objects shaped as the API returns them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from controller.model import MigrationState, NodePressure, QoS, Taint, Toleration
from controller.sources.objects import EVACUATION_PHASE, ClusterObjects, build_snapshot, selector_matches, timestamp
from controller.sources.prometheus import PressureReading, VmUsage

T0 = "2026-01-01T00:00:00Z"
GI = 2.0**30


def node(name: str, *, ready: bool = True, cpu: str = "7500m", memory: str = "30Gi", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": {"kubernetes.io/hostname": f"host-{name}"}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory},
            "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
        },
    }


def vmi(name: str, node_name: str = "n0", *, phase: str = "Running", **extra: Any) -> dict[str, Any]:
    spec = {"domain": {"memory": {"guest": "4Gi"}, "resources": {"requests": {"memory": "4Gi"}}}}
    status: dict[str, Any] = {"phase": phase, "nodeName": node_name, "conditions": []}
    obj = {"metadata": {"name": name, "namespace": "vms", "uid": f"uid-{name}"}, "spec": spec, "status": status}
    for key, value in extra.items():
        section, field = key.split("__")
        obj[section][field] = value  # type: ignore[index]
    return obj


def pod(vm: str, node_name: str = "n0", *, phase: str = "Running", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"virt-launcher-{vm}-x",
            "namespace": "vms",
            "uid": f"pod-{vm}-{node_name}",
            "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": f"uid-{vm}", "app": vm},
            "annotations": {"kubevirt.io/domain": vm},
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "compute", "resources": {"requests": {"cpu": "400m", "memory": "4336Mi"}}}],
            **spec,
        },
        "status": {"phase": phase, "qosClass": "Guaranteed"},
    }


def vmim(name: str, vm: str, phase: str | None, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "vms", "uid": f"uid-{name}", "creationTimestamp": T0},
        "spec": {"vmiName": vm},
        "status": {"phase": phase, **status} if phase else {},
    }
    return obj


def snap(objs: ClusterObjects, reading: PressureReading | None = None, **kw: Any):
    return build_snapshot(
        objs, reading or PressureReading(), taken_at=1000.0, cluster_eviction_strategy="LiveMigrate", **kw
    )


def test_nodes_allocatable_readiness_taints_and_pressure() -> None:
    pressure = NodePressure(990.0, score=0.4)
    objs = ClusterObjects(
        nodes=[
            node("n0", taints=[{"key": "k", "value": "v", "effect": "PreferNoSchedule"}], unschedulable=True),
            node("n1", ready=False, cpu="bogus"),
        ]
    )
    n0, n1 = snap(objs, PressureReading({"n0": pressure})).nodes
    assert (n0.cpu_allocatable, n0.memory_allocatable) == (7.5, 30 * GI)
    assert n0.taints == (Taint("k", "v", "PreferNoSchedule"),) and not n0.schedulable and n0.ready
    assert n0.pressure == pressure and n0.labels["kubernetes.io/hostname"] == "host-n0"
    assert not n1.ready and n1.pressure is None and math.isnan(n1.cpu_allocatable)  # validate.py reports it


def test_vm_from_vmi_and_its_running_launcher_pod() -> None:
    v = vmi("a", spec__evictionStrategy="LiveMigrateIfPossible", spec__nodeSelector={"zone": "z1"})
    v["metadata"]["annotations"] = {"descheduler.alpha.kubernetes.io/prefer-no-eviction": ""}
    launcher = pod("a", priority=1000, tolerations=[{"key": "t", "operator": "Exists", "effect": "NoSchedule"}])
    target = pod("a", "n1", phase="Pending")  # a migration target on another node is not the VM's pod
    usage = {("vms/a", "n0"): VmUsage(cpu=1.5, memory=3 * GI), ("vms/a", "n1"): VmUsage(cpu=9.0)}
    (vm,) = snap(ClusterObjects(vmis=[v], pods=[target, launcher]), PressureReading(vms=usage)).vms
    assert (vm.key, vm.node, vm.cpu_request, vm.memory_request) == ("vms/a", "n0", 0.4, 4336 * 2.0**20)
    assert vm.memory_size == 4 * GI and vm.priority == 1000 and vm.qos == QoS.GUARANTEED
    assert vm.eviction_strategy == "LiveMigrateIfPossible" and vm.node_selector == {"zone": "z1"}
    assert vm.tolerations == (Toleration("t", "Exists", "", "NoSchedule"),) and vm.prefers_no_eviction
    assert (vm.cpu_usage, vm.memory_usage) == (1.5, 3 * GI)  # the series of the node it runs on
    assert vm.live_migratable and not vm.host_devices and not vm.dra_claims and not vm.pdb_blocked


def test_vms_not_running_are_left_out_and_the_cluster_default_strategy_applies() -> None:
    objs = ClusterObjects(vmis=[vmi("a"), vmi("b", phase="Scheduling")])
    (vm,) = snap(objs).vms
    assert vm.name == "a" and vm.eviction_strategy == "LiveMigrate" and vm.cpu_request == 0.0
    none = build_snapshot(objs, PressureReading(), taken_at=0, cluster_eviction_strategy="None")
    assert none.vms[0].eviction_strategy is None


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (
            {
                "status__conditions": [
                    {"type": "LiveMigratable", "status": "False", "reason": "HostDeviceNotLiveMigratable"}
                ]
            },
            "migratable_reason",
            "HostDeviceNotLiveMigratable",
        ),
        ({"spec__resourceClaims": [{"name": "gpu"}]}, "dra_claims", True),
    ],
)
def test_pinned_vms(change: dict[str, Any], field: str, expected: Any) -> None:
    (vm,) = snap(ClusterObjects(vmis=[vmi("a", **change)], pods=[pod("a")])).vms
    assert getattr(vm, field) == expected


def test_host_devices_and_claims_reserved_for_the_pod() -> None:
    v = vmi("a")
    v["spec"]["domain"]["devices"] = {"gpus": [{"name": "g", "deviceName": "nvidia.com/H100"}]}
    claim = {"metadata": {"namespace": "vms"}, "status": {"reservedFor": [{"resource": "pods", "uid": "pod-b-n0"}]}}
    a, b = snap(ClusterObjects(vmis=[v, vmi("b")], pods=[pod("a"), pod("b")], claims=[claim])).vms
    assert a.host_devices and not a.dra_claims
    assert b.dra_claims and not b.host_devices


@pytest.mark.parametrize(
    ("pdb", "blocked"),
    [
        ({"spec": {"selector": {"matchLabels": {"app": "a"}}}, "status": {"disruptionsAllowed": 0}}, True),
        ({"spec": {"selector": {"matchLabels": {"app": "a"}}}, "status": {"disruptionsAllowed": 1}}, False),
        ({"spec": {"selector": {"matchLabels": {"app": "other"}}}, "status": {"disruptionsAllowed": 0}}, False),
        (
            {
                "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}},
                "status": {"disruptionsAllowed": 0},
            },
            True,
        ),
        (  # KubeVirt's own (old) per-VMI migration PDB is not a user's
            {
                "metadata": {"ownerReferences": [{"kind": "VirtualMachineInstance", "name": "a"}]},
                "spec": {"selector": {"matchLabels": {"app": "a"}}},
                "status": {"disruptionsAllowed": 0},
            },
            False,
        ),
    ],
)
def test_pdbs(pdb: dict[str, Any], blocked: bool) -> None:
    pdb = {**pdb, "metadata": {"name": "p", "namespace": "vms", **pdb.get("metadata", {})}}
    (vm,) = snap(ClusterObjects(vmis=[vmi("a")], pods=[pod("a")], pdbs=[pdb])).vms
    assert vm.pdb_blocked is blocked


def test_history_from_finished_migrations_oldest_first() -> None:
    done = {"startTimestamp": "2026-01-01T00:01:00Z", "endTimestamp": "2026-01-01T00:02:00Z"}
    first = vmim("m1", "a", "Succeeded", migrationState={**done, "sourceNode": "n1", "targetNode": "n0"})
    failed = {"startTimestamp": "2026-01-01T00:00:10Z", "endTimestamp": "2026-01-01T00:00:20Z", "failed": True}
    second = vmim("m0", "a", "Failed", migrationState={**failed, "sourceNode": "n1", "targetNode": "n2"})
    (vm,) = snap(ClusterObjects(vmis=[vmi("a")], migrations=[first, second])).vms
    assert [(p.source, p.target, p.succeeded) for p in vm.history] == [("n1", "n2", False), ("n1", "n0", True)]
    assert vm.history[1].duration == 60.0 and vm.history[1].ended == timestamp("2026-01-01T00:02:00Z")


def test_in_flight_vmims_evacuations_and_requests_not_yet_seen() -> None:
    running = vmim("m1", "a", "Running", migrationState={"sourceNode": "n0", "targetNode": "n1"})
    pending = vmim("m2", "b", None)
    pending["spec"]["addedNodeSelector"] = {"kubernetes.io/hostname": "host-n2"}
    marked = vmi("c")
    marked["status"]["evacuationNodeName"] = "n0"
    extra = [
        MigrationState("vms/a", "n0", None, "Requested", 5.0),
        MigrationState("vms/d", "n0", "n1", "Requested", 5.0),
    ]
    objs = ClusterObjects(
        nodes=[node("n0"), node("n1"), node("n2")],
        vmis=[vmi("a"), vmi("b"), marked, vmi("d")],
        migrations=[running, pending, vmim("old", "a", "Succeeded")],
    )
    flights = {m.vm: m for m in snap(objs, extra=extra).migrations}
    started = timestamp(T0)
    assert flights["vms/a"] == MigrationState("vms/a", "n0", "n1", "Running", started)  # the cluster wins
    assert flights["vms/b"] == MigrationState("vms/b", "n0", "n2", "Pending", started)  # target from the selector
    assert flights["vms/c"] == MigrationState("vms/c", "n0", None, EVACUATION_PHASE, 1000.0)
    assert flights["vms/d"].phase == "Requested" and len(flights) == 4


def test_selector_matches() -> None:
    labels = {"app": "a", "tier": "db"}
    assert selector_matches({}, labels) and not selector_matches(None, labels)
    exprs = [
        ({"key": "tier", "operator": "NotIn", "values": ["web"]}, True),
        ({"key": "tier", "operator": "Exists"}, True),
        ({"key": "zone", "operator": "DoesNotExist"}, True),
        ({"key": "zone", "operator": "Exists"}, False),
        ({"key": "app", "operator": "In", "values": ["b"]}, False),
    ]
    for expr, expected in exprs:
        assert selector_matches({"matchExpressions": [expr]}, labels) is expected
