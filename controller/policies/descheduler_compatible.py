"""`DeschedulerCompatiblePolicy`: the KubeVirtRelieveAndMigrate profile, re-implemented decision for decision.

Why it exists: it is the baseline psi-relief must beat and a drop-in for the profile's users, so it reproduces
LowNodeUtilization as the OpenShift operator configures it (docs/reference/descheduler.md, "ref" below), with the
upstream code it cites: kubernetes-sigs/descheduler `nodeutilization/lownodeutilization.go` (Balance),
`nodeutilization.go` (evictPodsFromSourceNodes, evictPods), `pod/pods.go` (SortPodsBasedOnPriorityLowToHigh),
`evictions/evictions.go` (EvictPod) and the operator's `kubevirtmigrationaware` plugin. Which version of the
operator's policy it reproduces is `deschedulerCompatible.profileVersion` (controller/config.py): `main`, the
default (`evictionLimits.node: 2`, KubevirtMigrationAware as Filter and PreEvictionFilter), or `4.21-ga` (neither).

1. Usage = int(score*100) of the Ready nodes matching nodeSelector; classify around the mean (ref §2.2-2.3,
   lines 156-186; controller/classify.py).
2. Do nothing when there is no under-utilised node, when their count is <= numberOfNodes, when every node is
   under-utilised, or when none is over-utilised (ref lines 179-185, Balance).
3. Stop before evicting if the under-utilised nodes have no room below the high threshold: the sum over them
   of int(high*0.01*100) - usage must be >= 1 (continueEvictionCond, preemptive check in evictPods; its other
   half, the source's usage above int(high), always holds for an over-utilised node).
4. Over-utilised nodes in descending usage (ref line 188). On each, the evictor Filter keeps VMs that are not
   annotated prefer-no-eviction (noEvictionPolicy Mandatory) and below system-critical priority, and, with
   KubevirtMigrationAware, not mid-migration (ref lines 189-193, §4); no such VM: next node.
5. Order: nil priority first, lower priority, BestEffort < Burstable < Guaranteed, un-annotated first (ref line
   194); equal keys by namespace/name where Go's unstable sort keeps informer order.
6. Per VM: stop at evictionLimits.node evictions (main: 2; unset, as in 4.21 GA: one, "Currently, only a single
   pod eviction is allowed", ref line 199); skip VMs that tolerate the taints of no under-utilised node
   (PodToleratesTaints, all effects, and only if it has at least as many tolerations as the node has taints: ref
   line 196); skip excluded namespaces and, with KubevirtMigrationAware, VMs in cooldown (PreEvictionFilter,
   controller/cooldown.py); then "evict".
7. Evict (ref §2.5-2.6, lines 202-223): a VM already being evacuated is a no-op that the loop counts as its one
   eviction (without KubevirtMigrationAware's Filter, as in 4.21 GA); otherwise the `MigrationBudget` admits
   (total limit: stop everything; node limit: next node; refusal of this VM: next VM, as a failed eviction
   continues).
No target is chosen: the KubeVirt scheduler places the VM, steered only by the soft taints (ref §1.5, pain 3).
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.budget import MigrationBudget, Refused
from controller.classify import Classification, Thresholds, capacity_cap, classify, usage_percent
from controller.config import ControllerConfig
from controller.model import Move, NodeExplanation, QoS, Taint, Toleration, VMState
from controller.policies import PolicyOutcome
from controller.view import ClusterView

SYSTEM_CRITICAL_PRIORITY = 2_000_000_000  # scheduling.SystemCriticalPriority, DefaultEvictor's default guard
_QOS_RANK = {QoS.BEST_EFFORT: 0, QoS.BURSTABLE: 1, QoS.GUARANTEED: 2}


def eviction_order(vms: Sequence[VMState]) -> list[VMState]:
    """SortPodsBasedOnPriorityLowToHigh, made total with namespace/name."""
    return sorted(
        vms,
        key=lambda vm: (
            vm.priority is not None,
            vm.priority or 0,
            _QOS_RANK[vm.qos],
            vm.prefers_no_eviction,
            vm.key,
        ),
    )


def tolerates_node(tolerations: tuple[Toleration, ...], taints: tuple[Taint, ...]) -> bool:
    """One node's half of utils.PodToleratesTaints: tolerate every taint, with the count precondition."""
    if len(tolerations) < len(taints):
        return False
    return all(any(t.tolerates(taint) for t in tolerations) for taint in taints)


class DeschedulerCompatiblePolicy:
    name = "descheduler-compatible"

    def __init__(self, config: ControllerConfig) -> None:
        self.params = config.descheduler_compatible
        low, high, use_deviation = self.params.thresholds()
        self.thresholds = Thresholds(low, high, use_deviation)

    def classify(self, view: ClusterView) -> Classification:
        usage = {
            n.name: usage_percent(n.pressure.score)
            for n in view.population
            if n.pressure is not None and n.pressure.score is not None
        }
        unschedulable = {n.name for n in view.population if not n.schedulable}
        return classify(usage, unschedulable, self.thresholds)

    def propose(self, view: ClusterView, budget: MigrationBudget) -> PolicyOutcome:
        c = self.classify(view)
        notes: dict[str, str] = {}
        moves: list[Move] = []
        idle = self._idle(c, view)
        if idle is None:
            self._evict(view, budget, c, moves, notes)
        nodes = tuple(
            NodeExplanation(name, c.category(name), value, c.low, c.high, notes.get(name, ""))
            for name, value in c.usage.items()
        )
        classes = {name: c.category(name) for name in c.usage}
        code, reason = idle if idle else (None, None)
        return PolicyOutcome(tuple(moves), nodes, classes, code, reason)

    def _idle(self, c: Classification, view: ClusterView) -> tuple[str, str] | None:
        if not c.under:
            return "no-underutilized-node", f"no node is under-utilised (low threshold {c.low:g}%)"
        if len(c.under) <= self.params.number_of_nodes:
            return "too-few-underutilized-nodes", f"{len(c.under)} under-utilised node(s) <= numberOfNodes"
        if len(c.under) == len(view.population):
            return "all-nodes-underutilized", "all nodes are under-utilised"
        if not c.over:
            return "no-overutilized-node", f"no node is over-utilised (high threshold {c.high:g}%)"
        room = sum(capacity_cap(c.high) - c.usage[name] for name in c.under)
        if room < 1:
            return "no-room-below-high", f"under-utilised nodes have no room below {c.high:g}%"
        return None

    def _evict(
        self, view: ClusterView, budget: MigrationBudget, c: Classification, moves: list[Move], notes: dict[str, str]
    ) -> None:
        aware = self.params.migration_aware.enabled
        limit = self.params.eviction_limits_node or 1  # unset: break after the first eviction
        destination_taints = {view.nodes[name].taints for name in c.under}
        for source in c.over:  # continueEvictionCond's own-node half holds: usage > high >= int(high)
            removable = [vm for vm in view.vms_by_node.get(source, ()) if self._filter(vm, view, budget, aware)]
            if not removable:
                notes[source] = "no evictable VM"
                continue
            evicted = 0
            for vm in eviction_order(removable):
                if evicted >= limit:
                    break
                if not any(tolerates_node(vm.tolerations, taints) for taints in destination_taints):
                    budget.refuse(vm.key, "tolerates the taints of no under-utilised node")
                    continue
                if vm.namespace in budget.safety.excluded_namespaces:  # PreEvictionFilter, before Evict
                    budget.refuse(vm.key, f"namespace {vm.namespace} is excluded")
                    continue
                if vm.key in view.in_flight:  # erCache: "already requested", counted by the loop
                    notes[source] = f"{vm.key} already being evacuated: re-request is a no-op"
                    evicted += 1
                    continue
                reason = f"LowNodeUtilization: {source} usage {c.usage[source]:g}% > high {c.high:g}%" + (
                    f" (mean {c.average:g}% + {self.thresholds.high:g})" if c.average is not None else ""
                )
                move = Move(vm.key, source, None, reason, source_before=c.usage[source])
                decision = budget.admit(move)
                if isinstance(decision, Refused):
                    if decision.scope == "cluster":
                        notes[source] = decision.reason
                        return
                    if decision.scope == "node":
                        notes[source] = decision.reason
                        break
                    continue
                moves.append(move)
                notes[source] = f"evicting {vm.key}"
                evicted += 1

    def _filter(self, vm: VMState, view: ClusterView, budget: MigrationBudget, aware: bool) -> bool:
        """DefaultEvictor (+ KubevirtMigrationAware) Filter; rejected VMs are reported as refusals."""
        if self.params.evictor_no_eviction_policy == "Mandatory" and vm.prefers_no_eviction:
            budget.refuse(vm.key, "annotated descheduler.alpha.kubernetes.io/prefer-no-eviction")
            return False
        if vm.priority is not None and vm.priority >= SYSTEM_CRITICAL_PRIORITY:
            budget.refuse(vm.key, f"system-critical priority {vm.priority}")
            return False
        if aware and vm.key in view.in_flight:
            budget.refuse(vm.key, "migration in progress (KubevirtMigrationAware)")
            return False
        return True
