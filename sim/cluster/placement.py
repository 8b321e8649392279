"""Glue between the store and the pure scheduler: node candidates with their bound requests, pod requests of a
VMI, pod IPs, and node readiness changes (the NotReady fault).

Why it exists: both VMI start-up and migration targets need "where can this VMI's launcher pod go now", and
the answer depends on every pod bound to every node, including migration target pods that reserve room.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sim.cluster import quantity
from sim.cluster.clock import rfc3339
from sim.cluster.kv_objects import SCHEDULABLE_LABEL, memory_overhead, pod_requests, vmi_requests, vmi_vcpus
from sim.cluster.resources import NODES, PODS
from sim.cluster.scheduler import Decision, NodeCandidate, PodRequest, schedule
from sim.cluster.store import Store

UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def node_ready(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def candidates(store: Store) -> list[NodeCandidate]:
    """Every node with the requests of the pods bound to it; recomputed only after a pod or node was written (a
    pending migration retries its placement at every reconcile, and the sum runs over every pod)."""
    stamp = (store.generation(PODS), store.generation(NODES))
    return list(store.memo("placement-candidates", stamp, lambda: _candidates(store)))


def _candidates(store: Store) -> list[NodeCandidate]:
    used: dict[str, list[int]] = {}
    for pod in store.peek(PODS):
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            cpu, mem = pod_requests(pod)
            u = used.setdefault(node, [0, 0])
            u[0] += cpu
            u[1] += mem
    out = []
    for n in store.peek(NODES):
        alloc = (n.get("status") or {}).get("allocatable") or (n.get("status") or {}).get("capacity") or {}
        u = used.get(n["metadata"]["name"], [0, 0])
        out.append(
            NodeCandidate(
                name=n["metadata"]["name"],
                allocatable_cpu_millis=quantity.cpu_millis(alloc.get("cpu", 0)),
                allocatable_memory_bytes=quantity.bytes_(alloc.get("memory", 0)),
                used_cpu_millis=u[0],
                used_memory_bytes=u[1],
                labels=n["metadata"].get("labels") or {},
                taints=tuple((n.get("spec") or {}).get("taints") or []),
                ready=node_ready(n),
                unschedulable=bool((n.get("spec") or {}).get("unschedulable")),
            )
        )
    return out


def vmi_pod_request(
    vmi: dict[str, Any], added_node_selector: dict[str, str] | None = None, ratio: int = 10
) -> PodRequest:
    spec = vmi.get("spec") or {}
    cpu, mem = vmi_requests(vmi, ratio)
    selector = dict(spec.get("nodeSelector") or {})
    selector[SCHEDULABLE_LABEL] = "true"
    selector.update(added_node_selector or {})
    return PodRequest(
        cpu_millis=cpu,
        memory_bytes=mem + memory_overhead(vmi_vcpus(vmi), mem),
        node_selector=selector,
        affinity=spec.get("affinity"),
        tolerations=tuple(spec.get("tolerations") or []),
    )


def place_vmi(
    store: Store,
    vmi: dict[str, Any],
    *,
    exclude: tuple[str, ...] = (),
    added: dict[str, str] | None = None,
    ratio: int = 10,
    nodes: list[NodeCandidate] | None = None,
) -> Decision:
    return schedule(vmi_pod_request(vmi, added, ratio), nodes if nodes is not None else candidates(store), exclude)


class IpAllocator:
    """Pod IPs from 10.128.0.0/14 (OpenShift's default cluster network), handed out in order."""

    def __init__(self, cidr: str = "10.128.0.0/14") -> None:
        self._hosts = ipaddress.ip_network(cidr).hosts()
        next(self._hosts)  # skip the gateway-like first address

    def next(self) -> str:
        return str(next(self._hosts))


def set_node_ready(store: Store, name: str, ready: bool) -> dict[str, Any]:
    """The node lifecycle controller's view of a node that stops (or resumes) posting status."""
    now = rfc3339(store.clock.wall())

    def change(node: dict[str, Any]) -> None:
        conds = node.setdefault("status", {}).setdefault("conditions", [])
        cond = next((c for c in conds if c.get("type") == "Ready"), None)
        if cond is None:
            cond = {"type": "Ready"}
            conds.append(cond)
        if ready:
            cond.update(status="True", reason="KubeletReady", message="kubelet is posting ready status")
        else:
            cond.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")
        cond["lastTransitionTime"] = now
        cond["lastHeartbeatTime"] = now
        taints = [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != UNREACHABLE_TAINT]
        if not ready:
            taints += [
                {"key": UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": now},
                {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": now},
            ]
        spec = node.setdefault("spec", {})
        if taints:
            spec["taints"] = taints
        else:
            spec.pop("taints", None)

    return store.mutate(NODES, None, name, change)
