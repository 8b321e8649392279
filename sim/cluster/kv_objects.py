"""KubeVirt object shapes: the virt-launcher pod of a VMI, the labels and annotations KubeVirt puts on them,
and readers for the VMI fields the controllers use.

Why it exists: controllers find a VM's pod by `kubevirt.io=virt-launcher` and `kubevirt.io/created-by`, map a
pod back to its VMI through the `kubevirt.io/domain` annotation, and the descheduler looks for
`descheduler.alpha.kubernetes.io/request-evict-only`. The names and values here are KubeVirt's
(staging/src/kubevirt.io/api/core/v1/types.go, pkg/virt-controller/services/template.go).
"""

from __future__ import annotations

from typing import Any

from sim.cluster import quantity
from sim.cluster.objectmeta import random_suffix

APP_LABEL = "kubevirt.io"
CREATED_BY_LABEL = "kubevirt.io/created-by"
DOMAIN_ANNOTATION = "kubevirt.io/domain"
NODE_NAME_LABEL = "kubevirt.io/nodeName"
MIGRATION_JOB_LABEL = "kubevirt.io/migrationJobUID"
MIGRATION_TARGET_NODE_LABEL = "kubevirt.io/migrationTargetNodeName"
MIGRATION_SELECTOR_LABEL = "kubevirt.io/vmi-name"
VM_NAME_LABEL = "vm.kubevirt.io/name"
EVACUATION_ANNOTATION = "kubevirt.io/evacuationMigration"
EVICTION_SOURCE_ANNOTATION = "kubevirt.io/eviction-source"
REQUEST_EVICT_ONLY = "descheduler.alpha.kubernetes.io/request-evict-only"
EVICTION_IN_PROGRESS = "descheduler.alpha.kubernetes.io/eviction-in-progress"
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
LAUNCHER_IMAGE = "registry.example/kubevirt/virt-launcher:v1.7.0"
LIVE_MIGRATABLE = "LiveMigratable"
# the twin's own annotations on VMIs (set from the scenario): guest memory dirty rate and the load-trace VM id
DIRTY_RATE_ANNOTATION = "sim.autonomic.io/dirty-rate-bytes-per-second"
LOAD_TRACE_ANNOTATION = "sim.autonomic.io/load-trace"
# per-VM load overrides (scenario_load.py): constant utilization (0..1) and demand multipliers (> 0)
CPU_LOAD_ANNOTATION = "sim.autonomic.io/cpu-load"
MEMORY_LOAD_ANNOTATION = "sim.autonomic.io/memory-load"
CPU_LOAD_FACTOR_ANNOTATION = "sim.autonomic.io/cpu-load-factor"
MEMORY_LOAD_FACTOR_ANNOTATION = "sim.autonomic.io/memory-load-factor"


def dirty_rate(vmi: dict[str, Any], default: float) -> float:
    raw = (vmi["metadata"].get("annotations") or {}).get(DIRTY_RATE_ANNOTATION)
    try:
        return float(raw) if raw is not None else default
    except ValueError:
        return default


def vmi_vcpus(vmi: dict[str, Any]) -> int:
    cpu = ((vmi.get("spec") or {}).get("domain") or {}).get("cpu") or {}
    return int(cpu.get("cores", 1)) * int(cpu.get("sockets", 1)) * int(cpu.get("threads", 1))


def vmi_requests(vmi: dict[str, Any], cpu_allocation_ratio: int = 10) -> tuple[int, int]:
    """(cpu millicores, memory bytes) the VMI's launcher pod requests for the guest.

    CPU: `spec.domain.resources.requests.cpu` when set, else vCPUs / cpuAllocationRatio (KubeVirt's default
    ratio is 10, so a 4-vCPU VM requests 400m and nodes overcommit vCPUs). Memory: requests.memory, else
    `spec.domain.memory.guest`.
    """
    domain = (vmi.get("spec") or {}).get("domain") or {}
    requests = (domain.get("resources") or {}).get("requests") or {}
    cpu = requests.get("cpu")
    millis = quantity.cpu_millis(cpu) if cpu is not None else -(-vmi_vcpus(vmi) * 1000 // cpu_allocation_ratio)
    memory = requests.get("memory") or (domain.get("memory") or {}).get("guest") or "1Gi"
    return millis, quantity.bytes_(memory)


def memory_overhead(vcpus: int, memory_bytes: int) -> int:
    """Approximation of KubeVirt's launcher overhead (virt-launcher, QEMU, page tables): fixed + per vCPU + per GiB."""
    return 200 * 2**20 + vcpus * 8 * 2**20 + memory_bytes // 512


def eviction_strategy(vmi: dict[str, Any], cluster_default: str | None) -> str | None:
    return (vmi.get("spec") or {}).get("evictionStrategy") or cluster_default


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def is_migratable(vmi: dict[str, Any]) -> bool:
    c = condition(vmi, LIVE_MIGRATABLE)
    return bool(c and c.get("status") == "True")


def non_migratable_reason(vmi: dict[str, Any]) -> tuple[str, str] | None:
    """KubeVirt's LiveMigratable=False reason and message for the features the twin models."""
    spec = vmi.get("spec") or {}
    devices = (spec.get("domain") or {}).get("devices") or {}
    if devices.get("hostDevices") or devices.get("gpus"):
        return "HostDeviceNotLiveMigratable", "VMI uses a PCI host devices"
    if spec.get("resourceClaims"):
        return "HostDeviceNotLiveMigratable", "VMI uses DRA devices (spec.resourceClaims)"
    return None


def set_condition(
    obj: dict[str, Any], kind: str, status: str, reason: str = "", message: str = "", now: str = ""
) -> None:
    conds = obj.setdefault("status", {}).setdefault("conditions", [])
    cur = next((c for c in conds if c.get("type") == kind), None)
    new = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": now}
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    if cur is None:
        conds.append(new)
    elif cur.get("status") != status or cur.get("reason") != new.get("reason"):
        cur.clear()
        cur.update(new)


def launcher_pod(
    vmi: dict[str, Any],
    node: str | None,
    pod_ip: str,
    now: str,
    *,
    migration_uid: str | None = None,
    cpu_allocation_ratio: int = 10,
    unschedulable: str = "",
) -> dict[str, Any]:
    """The virt-launcher pod of `vmi`: bound to `node` and Running with `pod_ip`, or, with `node` None, Pending and
    unscheduled, its PodScheduled condition False with the scheduler's `unschedulable` message."""
    meta, spec = vmi["metadata"], vmi.get("spec") or {}
    cpu, mem = vmi_requests(vmi, cpu_allocation_ratio)
    mem += memory_overhead(vmi_vcpus(vmi), mem)
    labels = dict(meta.get("labels") or {})
    labels.update({APP_LABEL: "virt-launcher", CREATED_BY_LABEL: meta["uid"], VM_NAME_LABEL: meta["name"]})
    if migration_uid:
        labels[MIGRATION_JOB_LABEL] = migration_uid
    node_selector = dict(spec.get("nodeSelector") or {})
    node_selector[SCHEDULABLE_LABEL] = "true"
    pod_spec: dict[str, Any] = {
        "nodeSelector": node_selector,
        "tolerations": list(spec.get("tolerations") or []),
        "containers": [
            {
                "name": "compute",
                "image": LAUNCHER_IMAGE,
                "resources": {
                    "requests": {"cpu": quantity.format_cpu(cpu), "memory": quantity.format_bytes(mem)},
                    "limits": {"memory": quantity.format_bytes(mem)},
                },
            }
        ],
        "restartPolicy": "Never",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
    }
    if spec.get("affinity"):
        pod_spec["affinity"] = spec["affinity"]
    if spec.get("resourceClaims"):
        pod_spec["resourceClaims"] = spec["resourceClaims"]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"virt-launcher-{meta['name']}-{random_suffix()}",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {
                DOMAIN_ANNOTATION: meta["name"],
                REQUEST_EVICT_ONLY: "",
                "kubevirt.io/migrationTransportUnix": "true",
            },
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachineInstance",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }
    if node is None:
        pod_unschedulable(pod, unschedulable, now)
    else:
        pod_bound(pod, node, pod_ip, now)
    return pod


def scheduled_condition(now: str) -> dict[str, Any]:
    return {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}


def pod_unschedulable(pod: dict[str, Any], message: str, now: str) -> None:
    """What kube-scheduler writes on a pod no node fits: Pending, PodScheduled False, reason Unschedulable."""
    st = pod.setdefault("status", {})
    st["phase"] = "Pending"
    conditions = [c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"]
    old = conditions[0] if conditions else {}
    since = old.get("lastTransitionTime") if old.get("status") == "False" else now
    st["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": since or now,
        }
    ]


def pod_bound(pod: dict[str, Any], node: str, pod_ip: str, now: str) -> None:
    """A pod bound to `node` (the scheduler's binding), started and ready there (the kubelet's status)."""
    pod["spec"]["nodeName"] = node
    pod["status"] = {
        "phase": "Running",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "qosClass": "Burstable",
        "conditions": [
            scheduled_condition(now),
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": "compute",
                "ready": True,
                "restartCount": 0,
                "image": LAUNCHER_IMAGE,
                "imageID": LAUNCHER_IMAGE + "@sha256:0",
                "started": True,
                "state": {"running": {"startedAt": now}},
            }
        ],
    }


def is_launcher(pod: dict[str, Any]) -> bool:
    return (pod["metadata"].get("labels") or {}).get(APP_LABEL) == "virt-launcher"


def pod_requests(pod: dict[str, Any]) -> tuple[int, int]:
    cpu = mem = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += quantity.cpu_millis(req.get("cpu", 0))
        mem += quantity.bytes_(req.get("memory", 0))
    return cpu, mem
