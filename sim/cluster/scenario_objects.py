"""API objects for scenario entries: a Node with complete status, a VirtualMachine + VirtualMachineInstance
pair, and a plain (model-server) pod with its IP.

Why it exists: the python client's pydantic models refuse objects that lack OpenAPI-required fields (a Node
without `nodeInfo.bootID`, a container status without `imageID`), so these shapes are written out in full,
once, here.
"""

from __future__ import annotations

from typing import Any

from sim.cluster import quantity
from sim.cluster.kv_objects import DIRTY_RATE_ANNOTATION, LOAD_TRACE_ANNOTATION, SCHEDULABLE_LABEL

RESERVED_CPU_MILLIS = 500  # system-reserved + kube-reserved, as OpenShift's defaults roughly are
RESERVED_MEMORY = 1536 * 2**20


def node_object(
    name: str,
    cpu: str,
    memory: str,
    *,
    labels: dict[str, str],
    taints: list[dict[str, Any]],
    ready: bool,
    unschedulable: bool,
    index: int,
    now: str,
) -> dict[str, Any]:
    cpu_m, mem_b = quantity.cpu_millis(cpu), quantity.bytes_(memory)
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node-role.kubernetes.io/worker": "",
        SCHEDULABLE_LABEL: "true",
        **labels,
    }
    cond = {
        "type": "Ready",
        "status": "True" if ready else "Unknown",
        "reason": "KubeletReady" if ready else "NodeStatusUnknown",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    spec: dict[str, Any] = {"taints": taints} if taints else {}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
        "status": {
            "capacity": {"cpu": quantity.format_cpu(cpu_m), "memory": quantity.format_bytes(mem_b), "pods": "250"},
            "allocatable": {
                "cpu": quantity.format_cpu(max(cpu_m - RESERVED_CPU_MILLIS, 0)),
                "memory": quantity.format_bytes(max(mem_b - RESERVED_MEMORY, 0)),
                "pods": "250",
            },
            "conditions": [cond]
            + [
                {"type": t, "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now}
                for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"192.168.{index // 250}.{index % 250 + 10}"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.34.0",
                "osImage": "Red Hat Enterprise Linux CoreOS (twin)",
                "containerRuntimeVersion": "cri-o://1.34.0",
                "kernelVersion": "5.14.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "bootID": f"boot-{index}",
                "machineID": f"machine-{index}",
                "systemUUID": f"uuid-{index}",
                "kubeProxyVersion": "",
            },
        },
    }


def vm_objects(vm: Any, load: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(VirtualMachine, VirtualMachineInstance) for a scenario VM; `load` are its load annotations
    (scenario_load.load_annotations)."""
    annotations = dict(load or {})
    if vm.dirty_rate is not None:
        annotations[DIRTY_RATE_ANNOTATION] = str(int(quantity.parse(vm.dirty_rate)))
    if vm.load_trace:
        annotations[LOAD_TRACE_ANNOTATION] = vm.load_trace
    labels = {"kubevirt.io/vm": vm.name, "vm.kubevirt.io/name": vm.name, **vm.labels}
    devices: dict[str, Any] = {
        "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
        "interfaces": [{"name": "default", "masquerade": {}}],
    }
    if vm.host_devices:
        devices["hostDevices"] = vm.host_devices
    if vm.gpus:
        devices["gpus"] = vm.gpus
    spec: dict[str, Any] = {
        "domain": {
            "cpu": {"cores": vm.cpu, "sockets": 1, "threads": 1},
            "memory": {"guest": vm.memory},
            "resources": {"requests": {"memory": vm.memory}},
            "devices": devices,
        },
        "networks": [{"name": "default", "pod": {}}],
        "volumes": [{"name": "rootdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:latest"}}],
    }
    if vm.eviction_strategy:
        spec["evictionStrategy"] = vm.eviction_strategy
    if vm.node_selector:
        spec["nodeSelector"] = vm.node_selector
    if vm.tolerations:
        spec["tolerations"] = vm.tolerations
    if vm.resource_claims:
        spec["resourceClaims"] = vm.resource_claims
    meta = {"name": vm.name, "labels": labels, "annotations": annotations}
    vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": dict(meta), "spec": spec}
    vm_obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": vm.name, "labels": dict(vm.labels)},
        "spec": {
            "runStrategy": "Always",
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
        },
    }
    return vm_obj, vmi


def plain_pod(p: Any, now: str) -> dict[str, Any]:
    ready = "True" if p.ready else "False"
    return {
        "metadata": {"name": p.name, "labels": p.labels},
        "spec": {
            "nodeName": p.node,
            "containers": [
                {
                    "name": "server",
                    "image": "vllm/vllm-openai:latest",
                    "ports": [{"containerPort": p.port, "name": "http", "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": p.cpu, "memory": p.memory}},
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": p.ip,
            "podIPs": [{"ip": p.ip}],
            "startTime": now,
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": now}],
            "containerStatuses": [
                {
                    "name": "server",
                    "ready": p.ready,
                    "restartCount": 0,
                    "started": True,
                    "image": "vllm/vllm-openai:latest",
                    "imageID": "vllm/vllm-openai@sha256:0",
                    "state": {"running": {"startedAt": now}},
                }
            ],
        },
    }
