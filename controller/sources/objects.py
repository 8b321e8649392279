"""Kubernetes and KubeVirt objects (as the API returns them, plain dicts) turned into the planner's snapshot.

Why it exists: the planner sees `NodeState`, `VMState` and `MigrationState` only (controller/model.py); this is the
one place that knows where each field lives in a Node, a VirtualMachineInstance, its virt-launcher pod, a
VirtualMachineInstanceMigration, a PodDisruptionBudget or a ResourceClaim (docs/controller-policies.md, "What the
I/O shell provides"). It is pure, so it is tested on hand-written objects. Malformed quantities become NaN, which
validate.py reports ("invalid cluster objects: ..."), rather than a guess.

In flight: a non-terminal VMIM, a VMI marked for evacuation (`status.evacuationNodeName`) that has none yet, and
whatever the actuator has just requested that the cache has not shown yet (`extra`, see tracker.py). After a
restart the first two are rebuilt from the cluster, so nothing is started twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kubernetes.utils import parse_quantity

from controller.model import (
    TERMINAL_MIGRATION_PHASES,
    ClusterSnapshot,
    MigrationState,
    NodeState,
    PastMigration,
    QoS,
    Taint,
    Toleration,
    VMState,
)
from controller.sources.prometheus import PressureReading

Obj = dict[str, Any]
HOSTNAME_LABEL = "kubernetes.io/hostname"
CREATED_BY_LABEL = "kubevirt.io/created-by"
DOMAIN_ANNOTATION = "kubevirt.io/domain"
EVACUATION_PHASE = "EvacuationRequested"  # a VMI marked for evacuation whose VMIM does not exist yet


@dataclass(frozen=True)
class ClusterObjects:
    """The cache's content at one instant."""

    nodes: Sequence[Obj] = ()
    vmis: Sequence[Obj] = ()
    pods: Sequence[Obj] = ()  # virt-launcher pods
    migrations: Sequence[Obj] = ()  # VirtualMachineInstanceMigrations
    pdbs: Sequence[Obj] = ()
    claims: Sequence[Obj] = ()  # resource.k8s.io ResourceClaims


def build_snapshot(
    objs: ClusterObjects,
    reading: PressureReading,
    *,
    taken_at: float,
    cluster_eviction_strategy: str | None,
    extra: Iterable[MigrationState] = (),
) -> ClusterSnapshot:
    nodes = tuple(node_state(n, reading.nodes.get(n["metadata"]["name"])) for n in objs.nodes)
    hostnames = {
        (n.get("metadata", {}).get("labels") or {}).get(HOSTNAME_LABEL): n["metadata"]["name"] for n in objs.nodes
    }
    pods = _launchers(objs.pods)
    by_vmi: dict[str, list[Obj]] = defaultdict(list)
    for m in objs.migrations:
        by_vmi[f"{m['metadata'].get('namespace')}/{(m.get('spec') or {}).get('vmiName')}"].append(m)
    reserved = _reserved_pods(objs.claims)
    strategy = None if cluster_eviction_strategy in (None, "None") else cluster_eviction_strategy
    vms, flights = [], []
    for vmi in objs.vmis:
        meta, status = vmi["metadata"], vmi.get("status") or {}
        key, node = f"{meta.get('namespace')}/{meta.get('name')}", status.get("nodeName")
        if status.get("phase") != "Running" or not node:
            continue
        pod = pods.get((meta.get("namespace"), meta.get("uid"), node))
        vm = vm_state(vmi, pod, by_vmi.get(key, []), objs.pdbs, reserved, strategy)
        usage = reading.vm_usage(key, node)
        if usage is not None:
            vm = replace(vm, cpu_usage=usage.cpu, memory_usage=usage.memory, dirty_rate=usage.dirty_rate)
        vms.append(vm)
        flights.extend(in_flight(vmi, by_vmi.get(key, []), hostnames, taken_at))
    seen = {f.vm for f in flights}
    flights.extend(f for f in extra if f.vm not in seen)
    return ClusterSnapshot(nodes, tuple(vms), tuple(flights), taken_at)


def node_state(node: Obj, pressure: Any) -> NodeState:
    meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    taints = tuple(
        Taint(t.get("key", ""), t.get("value") or "", t.get("effect", "NoSchedule")) for t in spec.get("taints") or []
    )
    return NodeState(
        name=meta["name"],
        cpu_allocatable=quantity(allocatable.get("cpu")),
        memory_allocatable=quantity(allocatable.get("memory")),
        labels=dict(meta.get("labels") or {}),
        taints=taints,
        ready=ready,
        schedulable=not spec.get("unschedulable", False),
        pressure=pressure,
    )


def vm_state(
    vmi: Obj,
    pod: Obj | None,
    migrations: Sequence[Obj],
    pdbs: Sequence[Obj],
    reserved: set[tuple[str, str]],
    cluster_strategy: str | None,
) -> VMState:
    meta, spec, status = vmi["metadata"], vmi.get("spec") or {}, vmi.get("status") or {}
    ns = meta.get("namespace", "default")
    domain = spec.get("domain") or {}
    vmi_requests = (domain.get("resources") or {}).get("requests") or {}
    guest = (domain.get("memory") or {}).get("guest") or vmi_requests.get("memory")
    pod_spec = (pod or {}).get("spec") or {}
    cpu_req, mem_req = _pod_requests(pod_spec) if pod else (None, None)
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == "LiveMigratable"), None)
    devices = domain.get("devices") or {}
    pod_meta = (pod or {}).get("metadata") or {}
    claims = bool(spec.get("resourceClaims") or pod_spec.get("resourceClaims")) or (ns, pod_meta.get("uid")) in reserved
    priority = pod_spec.get("priority")
    return VMState(
        namespace=ns,
        name=meta["name"],
        node=status["nodeName"],
        cpu_request=cpu_req if cpu_req is not None else quantity(vmi_requests.get("cpu", "0")),
        memory_request=mem_req if mem_req is not None else quantity(vmi_requests.get("memory", guest or "0")),
        memory_size=quantity(guest or "0"),
        live_migratable=condition is None or condition.get("status") == "True",
        migratable_reason=(condition or {}).get("reason") or "",
        host_devices=bool(devices.get("hostDevices") or devices.get("gpus")),
        dra_claims=claims,
        eviction_strategy=spec.get("evictionStrategy") or cluster_strategy,
        priority=int(priority) if isinstance(priority, int) else None,
        qos=_qos(((pod or {}).get("status") or {}).get("qosClass") or status.get("qosClass")),
        annotations={**(meta.get("annotations") or {}), **(pod_meta.get("annotations") or {})},
        tolerations=tuple(_toleration(t) for t in pod_spec.get("tolerations") or spec.get("tolerations") or []),
        node_selector=dict(spec.get("nodeSelector") or {}),
        pdb_blocked=pod is not None and _pdb_blocked(pod, pdbs),
        history=history(vmi, migrations),
    )


def in_flight(vmi: Obj, migrations: Sequence[Obj], hostnames: Mapping[Any, str], now: float) -> list[MigrationState]:
    meta, status = vmi["metadata"], vmi.get("status") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    out = []
    for m in migrations:
        mstatus = m.get("status") or {}
        phase = mstatus.get("phase") or "Pending"
        if phase in TERMINAL_MIGRATION_PHASES:
            continue
        state = mstatus.get("migrationState") or {}
        selector = (m.get("spec") or {}).get("addedNodeSelector") or {}
        target = state.get("targetNode") or hostnames.get(selector.get(HOSTNAME_LABEL))
        source = state.get("sourceNode") or status.get("nodeName") or ""
        started = timestamp(m["metadata"].get("creationTimestamp")) or now
        out.append(MigrationState(key, source, target, phase, started))
    if not out and status.get("evacuationNodeName"):
        out.append(MigrationState(key, status["evacuationNodeName"], None, EVACUATION_PHASE, now))
    return out


def history(vmi: Obj, migrations: Sequence[Obj]) -> tuple[PastMigration, ...]:
    """Finished migrations of the VMI, oldest first: terminal VMIMs plus the VMI's last migrationState."""
    states: dict[str, Obj] = {}
    for m in migrations:
        mstatus = m.get("status") or {}
        if mstatus.get("phase") in TERMINAL_MIGRATION_PHASES and mstatus.get("migrationState"):
            states[m["metadata"].get("uid", m["metadata"].get("name", ""))] = mstatus["migrationState"]
    last = (vmi.get("status") or {}).get("migrationState")
    if last and last.get("migrationUid") not in states:
        states[last.get("migrationUid") or "vmi"] = last
    out = []
    for s in states.values():
        started, ended = timestamp(s.get("startTimestamp")), timestamp(s.get("endTimestamp"))
        if ended is None or not (s.get("sourceNode") and s.get("targetNode")):
            continue
        out.append(PastMigration(started or ended, ended, s["sourceNode"], s["targetNode"], not s.get("failed")))
    return tuple(sorted(out, key=lambda p: p.ended))


def quantity(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return math.nan


def timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels, matchExpressions); a null selector selects nothing, as for PDBs."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def _launchers(pods: Sequence[Obj]) -> dict[tuple[Any, Any, Any], Obj]:
    """(namespace, VMI uid, node) -> the running launcher pod (not a migration target still starting)."""
    out: dict[tuple[Any, Any, Any], Obj] = {}
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        owner = (meta.get("labels") or {}).get(CREATED_BY_LABEL)
        key = (meta.get("namespace"), owner, (pod.get("spec") or {}).get("nodeName"))
        if status.get("phase") == "Running" or key not in out:
            out[key] = pod
    return out


def _pod_requests(spec: Obj) -> tuple[float, float]:
    cpu = mem = 0.0
    for c in spec.get("containers") or []:
        requests = (c.get("resources") or {}).get("requests") or {}
        cpu += quantity(requests.get("cpu", "0"))
        mem += quantity(requests.get("memory", "0"))
    return cpu, mem


def _pdb_blocked(pod: Obj, pdbs: Sequence[Obj]) -> bool:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    for pdb in pdbs:
        pmeta = pdb["metadata"]
        if pmeta.get("namespace") != meta.get("namespace"):
            continue
        if any(o.get("kind", "").startswith("VirtualMachineInstance") for o in pmeta.get("ownerReferences") or []):
            continue  # KubeVirt's own migration PDB, not a user's
        if selector_matches((pdb.get("spec") or {}).get("selector"), labels):
            allowed = (pdb.get("status") or {}).get("disruptionsAllowed")
            if allowed is not None and allowed <= 0:
                return True
    return False


def _reserved_pods(claims: Sequence[Obj]) -> set[tuple[str, str]]:
    """(namespace, pod uid) of pods an allocated ResourceClaim is reserved for."""
    out = set()
    for claim in claims:
        ns = claim["metadata"].get("namespace", "")
        for ref in (claim.get("status") or {}).get("reservedFor") or []:
            if ref.get("resource") == "pods" and ref.get("uid"):
                out.add((ns, ref["uid"]))
    return out


def _qos(value: Any) -> QoS:
    try:
        return QoS(value)
    except ValueError:
        return QoS.BURSTABLE


def _toleration(t: Obj) -> Toleration:
    return Toleration(t.get("key") or None, t.get("operator") or "Equal", t.get("value") or "", t.get("effect") or None)
