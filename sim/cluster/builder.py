"""Turns a `Scenario` into API objects in the store and a `KubeVirtConfig`.

Why it exists: a scenario speaks in VMs and nodes; the API must show what a real cluster would have for them
(Node status with capacity, allocatable and conditions; VirtualMachine + VirtualMachineInstance + virt-launcher
pod; model-server pods with IPs; InferencePools; raw DRA objects). VMs placed on a node are bound there as
they would be after an earlier scheduling decision, even if that overcommits the node.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sim.cluster import quantity
from sim.cluster.clock import rfc3339
from sim.cluster.kubevirt import KubeVirt
from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.resources import (
    NAMESPACES,
    NODES,
    PDBS,
    PODS,
    PRIORITY_CLASSES,
    RESOURCE_TYPES,
    VMIS,
    VMS,
    ResourceType,
)
from sim.cluster.scenario import Scenario
from sim.cluster.scenario_load import load_annotations
from sim.cluster.scenario_objects import node_object, plain_pod, vm_objects
from sim.cluster.store import Store

# the two PriorityClasses kube-apiserver creates at start (pkg/apis/scheduling: SystemPriorityClasses)
SYSTEM_PRIORITY_CLASSES = (("system-node-critical", 2000001000), ("system-cluster-critical", 2000000000))
SYSTEM_NAMESPACES = (
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "openshift-cnv",
    "openshift-kube-descheduler-operator",
    "openshift-monitoring",
)


def kubevirt_config(s: Scenario, base: KubeVirtConfig | None = None) -> KubeVirtConfig:
    k = s.kubevirt
    changes: dict[str, Any] = {}
    for name in (
        "parallel_migrations_per_cluster",
        "parallel_outbound_migrations_per_node",
        "completion_timeout_per_gib",
        "progress_timeout",
        "allow_auto_converge",
        "allow_post_copy",
        "cpu_allocation_ratio",
    ):
        if getattr(k, name) is not None:
            changes[name] = getattr(k, name)
    if k.bandwidth_per_migration is not None:
        changes["bandwidth_per_migration"] = float(quantity.parse(k.bandwidth_per_migration))
    if k.node_link_bandwidth is not None:
        changes["node_link_bytes_per_s"] = float(quantity.parse(k.node_link_bandwidth))
    if k.eviction_strategy is not None:
        changes["default_eviction_strategy"] = None if k.eviction_strategy == "None" else k.eviction_strategy
    return dataclasses.replace(base or KubeVirtConfig(), **changes)


def _type_for(obj: dict[str, Any]) -> ResourceType:
    for t in RESOURCE_TYPES:
        if t.api_version == obj.get("apiVersion") and t.kind == obj.get("kind"):
            return t
    raise ValueError(f"{obj.get('apiVersion')}/{obj.get('kind')} is not served by the twin")


def build(store: Store, kubevirt: KubeVirt, s: Scenario) -> None:
    now = rfc3339(store.clock.wall())
    for ns in dict.fromkeys(
        [
            *SYSTEM_NAMESPACES,
            *s.namespaces,
            *(v.namespace for v in s.vms),
            *(p.namespace for p in s.pods),
            *(p.namespace for p in s.pdbs),
            *(p.namespace for p in s.inference_pools),
            *((r.get("metadata") or {}).get("namespace") for r in s.resources),
        ]
    ):
        if ns and store.try_get(NAMESPACES, None, ns) is None:
            store.create(NAMESPACES, {"metadata": {"name": ns}, "status": {"phase": "Active"}})
    for name, value in SYSTEM_PRIORITY_CLASSES:
        if store.try_get(PRIORITY_CLASSES, None, name) is None:
            store.create(
                PRIORITY_CLASSES,
                {
                    "metadata": {"name": name},
                    "value": value,
                    "globalDefault": False,
                    "preemptionPolicy": "PreemptLowerPriority",
                    "description": "Used for system critical pods that must not be moved from their current node."
                    if name == "system-node-critical"
                    else "Used for system critical pods that must run in the cluster, but can be moved to another node "
                    "if necessary.",
                },
            )
    for i, n in enumerate(s.nodes):
        store.create(
            NODES,
            node_object(
                n.name,
                n.cpu,
                n.memory,
                labels=n.labels,
                taints=[t.model_dump() for t in n.taints],
                ready=n.ready,
                unschedulable=n.unschedulable,
                index=i,
                now=now,
            ),
        )
    for obj in s.resources:
        rt = _type_for(obj)
        store.create(rt, obj, (obj.get("metadata") or {}).get("namespace"))
    for vm in s.vms:
        vm_obj, vmi = vm_objects(vm, load_annotations(s, vm))
        if vm.virtual_machine:
            created_vm = store.create(VMS, vm_obj, vm.namespace)
            vmi["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine",
                    "name": vm.name,
                    "uid": created_vm["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        created = store.create(VMIS, vmi, vm.namespace)
        if vm.node is not None:
            kubevirt.vmis.bind(created, vm.node)
    for p in s.pods:
        store.create(PODS, plain_pod(p, now), p.namespace)
    for pdb in s.pdbs:
        spec: dict[str, Any] = {"selector": pdb.selector}
        spec["minAvailable" if pdb.min_available is not None else "maxUnavailable"] = (
            pdb.min_available if pdb.min_available is not None else pdb.max_unavailable
        )
        store.create(PDBS, {"metadata": {"name": pdb.name}, "spec": spec}, pdb.namespace)
    for pool in s.inference_pools:
        store.create(
            _type_for({"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool"}),
            {
                "metadata": {"name": pool.name},
                "spec": {
                    "selector": {"matchLabels": pool.selector},
                    "targetPorts": [{"number": p} for p in pool.target_ports],
                    "endpointPickerRef": {
                        "group": "",
                        "kind": "Service",
                        "name": pool.endpoint_picker,
                        "port": {"number": pool.endpoint_picker_port},
                        "failureMode": "FailClose",
                    },
                },
            },
            pool.namespace,
        )
