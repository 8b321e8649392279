"""A small kube-scheduler: which node a new pod (a VMI's launcher or a migration target) lands on.

Why it exists: where a migrating VM ends up decides whether rebalancing works, and the soft-tainter steers
that only through PreferNoSchedule taints. The twin therefore filters and scores like kube-scheduler's default
plugins, in a pure function that tests can table-drive:

Filters (a node failing any is out, with the reason recorded):
- Ready condition True and not `spec.unschedulable` (NodeUnschedulable);
- requests fit: allocatable minus the requests of the pods already bound there (NodeResourcesFit);
- `nodeSelector` labels and required node affinity (`nodeSelectorTerms`: terms ORed, `matchExpressions`
  ANDed; `matchFields` on metadata.name) (NodeAffinity);
- every NoSchedule / NoExecute taint tolerated (TaintToleration);
- not in `exclude` (a migration target never equals the source).
Score (highest wins, ties by name): fewer untolerated PreferNoSchedule taints first (TaintToleration is
weighted to dominate), then LeastAllocated: mean of free cpu and free memory fractions after placement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.cluster.selectors import expression_matches


@dataclass(frozen=True)
class PodRequest:
    cpu_millis: int
    memory_bytes: int
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] | None = None
    tolerations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class NodeCandidate:
    name: str
    allocatable_cpu_millis: int
    allocatable_memory_bytes: int
    used_cpu_millis: int
    used_memory_bytes: int
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True)
class Decision:
    node: str | None
    rejected: Mapping[str, str]  # node -> first failing filter
    scores: Mapping[str, float]

    def message(self) -> str:
        """kube-scheduler-like FailedScheduling text."""
        if self.node:
            return f"scheduled on {self.node}"
        total = len(self.rejected)
        counts: dict[str, int] = {}
        for reason in self.rejected.values():
            counts[reason] = counts.get(reason, 0) + 1
        parts = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
        return f"0/{total} nodes are available: {parts}."


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        key = t.get("key") or ""
        if op == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def affinity_matches(affinity: Mapping[str, Any] | None, name: str, labels: Mapping[str, str]) -> bool:
    required = ((affinity or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms") or []
    if not terms:
        return True
    for term in terms:
        exprs_ok = all(expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        fields_ok = all(expression_matches(e, {"metadata.name": name}) for e in term.get("matchFields") or [])
        if exprs_ok and fields_ok and (term.get("matchExpressions") or term.get("matchFields")):
            return True
    return False


def _filter(pod: PodRequest, node: NodeCandidate, exclude: frozenset[str]) -> str | None:
    if node.name in exclude:
        return "node(s) excluded (migration source)"
    if not node.ready:
        return "node(s) were not ready"
    if node.unschedulable:
        return "node(s) were unschedulable"
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()) or not affinity_matches(
        pod.affinity, node.name, node.labels
    ):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod.tolerations, taint):
            return "node(s) had untolerated taint"
    if node.used_cpu_millis + pod.cpu_millis > node.allocatable_cpu_millis:
        return "Insufficient cpu"
    if node.used_memory_bytes + pod.memory_bytes > node.allocatable_memory_bytes:
        return "Insufficient memory"
    return None


def _score(pod: PodRequest, node: NodeCandidate) -> float:
    soft = sum(1 for t in node.taints if t.get("effect") == "PreferNoSchedule" and not tolerates(pod.tolerations, t))
    free_cpu = 1 - (node.used_cpu_millis + pod.cpu_millis) / max(node.allocatable_cpu_millis, 1)
    free_mem = 1 - (node.used_memory_bytes + pod.memory_bytes) / max(node.allocatable_memory_bytes, 1)
    return -10.0 * soft + (free_cpu + free_mem) / 2


def schedule(pod: PodRequest, nodes: Iterable[NodeCandidate], exclude: Iterable[str] = ()) -> Decision:
    excluded = frozenset(exclude)
    rejected: dict[str, str] = {}
    scores: dict[str, float] = {}
    for node in nodes:
        reason = _filter(pod, node, excluded)
        if reason:
            rejected[node.name] = reason
        else:
            scores[node.name] = _score(pod, node)
    best = max(sorted(scores), key=lambda n: scores[n], default=None)
    return Decision(best, rejected, scores)
