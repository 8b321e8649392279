"""`MigrationBudget`: admits or refuses each proposed move, and always says why.

Why it exists: limits and safety are one component that neither policy can bypass, dry-run included (architecture
convention 4). It plays the role of the descheduler's Evictor (`evictions.go EvictPod`, ref §2.5) plus the safety
rules of the product (issue 5): in-flight migrations count against the limits, so after a restart the rebuilt
in-flight set keeps anything from being started twice.

Checks, in order, each returning `Refused(reason, scope)`:
- VM (`scope="vm"`, try the next VM): already migrating; not live-migratable (condition reason); host devices;
  DRA claims; a PodDisruptionBudget allowing no disruption; `prefer-no-eviction` (when honoured); priority at or
  above `limits.protectedPriority`; excluded namespace; with the eviction actuator, an evictionStrategy under
  which an eviction would stop the VM instead of migrating it (ref §3); the per-VM cooldown.
- cluster (`scope="cluster"`, stop planning): in flight + planned + 1 > `maxInFlightTotal`, then planned + 1 >
  `maxMovesPerCycle` (total first, as EvictPod does).
- node (`scope="node"`, try the next source): outbound in flight + planned + 1 > `maxInFlightPerNode`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from controller.config import ControllerConfig
from controller.cooldown import CooldownRule
from controller.model import Move, Refusal, VMState
from controller.view import ClusterView

MIGRATING_EVICTION_STRATEGIES = frozenset({"LiveMigrate", "LiveMigrateIfPossible"})


@dataclass(frozen=True)
class Admitted:
    pass


@dataclass(frozen=True)
class Refused:
    reason: str
    scope: Literal["vm", "node", "cluster"] = "vm"


Decision = Admitted | Refused
ADMITTED = Admitted()


@dataclass(frozen=True)
class SafetyRules:
    protected_priority: int
    excluded_namespaces: frozenset[str]
    honour_prefer_no_eviction: bool
    actuator: str


class MigrationBudget:
    """Per-cycle admission state; build one per `plan()` call."""

    def __init__(self, view: ClusterView, config: ControllerConfig, cooldown: CooldownRule | None) -> None:
        self._view, self._limits, self.cooldown = view, config.limits, cooldown
        self.safety = SafetyRules(
            protected_priority=config.limits.protected_priority,
            excluded_namespaces=frozenset(config.excluded_namespaces),
            honour_prefer_no_eviction=config.policy == "psi-relief"
            or config.descheduler_compatible.evictor_no_eviction_policy == "Mandatory",
            actuator=config.actuator,
        )
        self._in_flight_total = len(view.in_flight)
        self._planned: Counter[str] = Counter()
        self._refusals: dict[str, str] = {}

    @property
    def planned_total(self) -> int:
        return sum(self._planned.values())

    def remaining_total(self) -> int:
        limits = self._limits
        by_concurrency = limits.max_in_flight_total - self._in_flight_total - self.planned_total
        return max(0, min(by_concurrency, limits.max_moves_per_cycle - self.planned_total))

    def remaining_for(self, source: str) -> int:
        used = self._view.outbound_in_flight.get(source, 0) + self._planned[source]
        return max(0, min(self._limits.max_in_flight_per_node - used, self.remaining_total()))

    def check_vm(self, vm: VMState) -> Decision:
        """The VM-scope checks alone (no counting); refusals are recorded."""
        reason = self._vm_problem(vm)
        return self.refuse(vm.key, reason) if reason else ADMITTED

    def movable(self, vm: VMState) -> bool:
        """The VM-scope checks alone, recording nothing: for VMs a policy only considers (a chain's make-room VM)."""
        return self._vm_problem(vm) is None

    def admit_all(self, moves: tuple[Move, ...]) -> Decision:
        """Admit every move of `moves` (a chain) or none: on the first refusal the earlier ones are taken back."""
        planned = self._planned.copy()
        for move in moves:
            decision = self.admit(move)
            if isinstance(decision, Refused):
                self._planned = planned
                return decision
        return ADMITTED

    def admit(self, move: Move) -> Decision:
        """Check `move` completely; an admitted move is counted against the limits of this cycle."""
        vm = self._view.vms.get(move.vm)
        if vm is None:
            return self.refuse(move.vm, "not in the cluster snapshot")
        decision = self.check_vm(vm)
        if isinstance(decision, Refused):
            return decision
        limits, source = self._limits, move.source
        in_flight, planned = self._in_flight_total, self.planned_total
        if in_flight + planned + 1 > limits.max_in_flight_total:
            total = limits.max_in_flight_total
            why = f"cluster limit: {in_flight} in flight + {planned} planned = maxInFlightTotal {total}"
            return self.refuse(move.vm, why, "cluster")
        if planned + 1 > limits.max_moves_per_cycle:
            why = f"cycle limit: maxMovesPerCycle {limits.max_moves_per_cycle} reached"
            return self.refuse(move.vm, why, "cluster")
        outbound = self._view.outbound_in_flight.get(source, 0)
        if outbound + self._planned[source] + 1 > limits.max_in_flight_per_node:
            why = (
                f"node limit: {source} has {outbound} outbound in flight + {self._planned[source]} planned = "
                f"maxInFlightPerNode {limits.max_in_flight_per_node}"
            )
            return self.refuse(move.vm, why, "node")
        if move.target is not None and move.target == source:
            return self.refuse(move.vm, f"target {move.target} is the source")
        self._planned[source] += 1
        return ADMITTED

    def refuse(self, subject: str, reason: str, scope: Literal["vm", "node", "cluster"] = "vm") -> Refused:
        """Record a refusal (the first reason per subject is kept) and return it."""
        self._refusals.setdefault(subject, reason)
        return Refused(reason, scope)

    def refusals(self) -> tuple[Refusal, ...]:
        return tuple(Refusal(subject, reason) for subject, reason in self._refusals.items())

    def _vm_problem(self, vm: VMState) -> str | None:
        flight, safety = self._view.in_flight.get(vm.key), self.safety
        if flight is not None:
            return f"already migrating from {flight.source} (phase {flight.phase})"
        if not vm.live_migratable:
            return f"not live-migratable: {vm.migratable_reason or 'LiveMigratable=False'}"
        if vm.host_devices:
            return "has host devices (passthrough): pinned to its node"
        if vm.dra_claims:
            return "has DRA resource claims: pinned to its node"
        if vm.pdb_blocked:
            return "a PodDisruptionBudget allows no disruption"
        if safety.honour_prefer_no_eviction and vm.prefers_no_eviction:
            return "annotated descheduler.alpha.kubernetes.io/prefer-no-eviction"
        if vm.priority is not None and vm.priority >= safety.protected_priority:
            return f"priority {vm.priority} >= protected {safety.protected_priority}"
        if vm.namespace in safety.excluded_namespaces:
            return f"namespace {vm.namespace} is excluded"
        if safety.actuator == "eviction" and vm.eviction_strategy not in MIGRATING_EVICTION_STRATEGIES:
            return f"an eviction would stop it, not migrate it (evictionStrategy {vm.eviction_strategy})"
        if self.cooldown is not None:
            return self.cooldown.blocking(vm, self._view.now)
        return None


def budget_for(view: ClusterView, config: ControllerConfig) -> MigrationBudget:
    """The budget with the active policy's cooldown: KubevirtMigrationAware's when enabled (profile main, the
    default; it counts failed migrations too, as the plugin does), psi-relief's own; none for 4.21 GA."""
    return MigrationBudget(view, config, cooldown_rule(config))


def cooldown_rule(config: ControllerConfig) -> CooldownRule | None:
    """The active policy's per-VM cooldown, or None when it has none."""
    if config.policy == "psi-relief":
        return CooldownRule.from_config(config.psi_relief.vm_cooldown)
    aware = config.descheduler_compatible.migration_aware
    return CooldownRule.from_config(aware, count_failed=True) if aware.enabled else None
