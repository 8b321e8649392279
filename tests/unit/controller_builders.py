"""Builders for the controller's unit tests: nodes, VMs and snapshots in one line each, plus a tiny cluster
simulator that applies a plan (every migration completes at once) so tests can run policies over many cycles."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.config import ControllerConfig, parse_config
from controller.model import (
    ClusterSnapshot,
    MigrationState,
    NodePressure,
    NodeState,
    PastMigration,
    Plan,
    Taint,
    VMState,
)

NOW = 1_000_000.0
GIB = 2.0**30
SCHEDULABLE = {"kubevirt.io/schedulable": "true"}


def make_node(
    name: str,
    score: float | None = None,
    *,
    cpu: float = 32.0,
    mem_gib: float = 128.0,
    psi_cpu: float | None = None,
    psi_memory: float | None = 0.0,
    util_cpu: float | None = None,
    util_mem: float | None = None,
    age: float = 10.0,
    ready: bool = True,
    schedulable: bool = True,
    labels: dict[str, str] | None = None,
    taints: tuple = (),
    pressure: bool = True,
) -> NodeState:
    p = (
        NodePressure(
            NOW - age,
            score=score,
            psi_cpu=psi_cpu,
            psi_memory=psi_memory,
            cpu_utilization=util_cpu,
            memory_utilization=util_mem,
        )
        if pressure
        else None
    )
    return NodeState(name, cpu, mem_gib * GIB, {**SCHEDULABLE, **(labels or {})}, taints, ready, schedulable, p)


def make_vm(
    name: str,
    node: str,
    *,
    cpu: float = 2.0,
    mem_gib: float = 4.0,
    usage: float | None = None,
    ns: str = "default",
    **kw: Any,
) -> VMState:
    kw.setdefault("memory_size", mem_gib * GIB)
    return VMState(ns, name, node, cpu, mem_gib * GIB, cpu_usage=usage, **kw)


def make_snapshot(nodes, vms, migrations=(), *, taken_at: float = NOW, metrics_error: str | None = None):
    return ClusterSnapshot(tuple(nodes), tuple(vms), tuple(migrations), taken_at, metrics_error)


def config(**doc: Any) -> ControllerConfig:
    return parse_config(doc)


def psi_config(**relief: Any) -> ControllerConfig:
    return parse_config(
        {"policy": "psi-relief", "actuator": "migration", "psiRelief": {"dimensions": ["cpu"], **relief}}
    )


class CpuCluster:
    """Ground truth for multi-cycle tests: node CPU PSI = (sum of VM usage / cores) ** exponent.

    `apply` completes every move of a plan at once (history recorded on the VM); without an explicit target it
    places the VM like the KubeVirt scheduler steered by soft taints would: fewest PreferNoSchedule taints, then
    least utilised, then name.
    """

    def __init__(
        self, cores: dict[str, float], vms: list[VMState], exponent: float = 6.0, warmup: tuple[float, float] = (0, 1)
    ) -> None:
        self.cores, self.vms, self.exponent = cores, {vm.key: vm for vm in vms}, exponent
        self.warmup_seconds, self.warmup_factor = warmup  # a VM that just arrived uses `factor` times more
        self.now = NOW
        self.taints: dict[str, set[str]] = {name: set() for name in cores}
        self.moves: list[tuple[float, str, str, str]] = []  # (time, vm, source, target)

    def usage(self, vm: VMState) -> float:
        warming = vm.history and self.now - vm.history[-1].ended < self.warmup_seconds
        return (vm.cpu_usage or 0.0) * (self.warmup_factor if warming else 1.0)

    def utilisation(self, node: str) -> float:
        return sum(self.usage(vm) for vm in self.vms.values() if vm.node == node) / self.cores[node]

    def psi(self, node: str) -> float:
        return min(1.0, self.utilisation(node)) ** self.exponent

    def score(self, node: str) -> float:
        """The recording rule's shape on two dimensions: 3 * positive distance from the mean, capped at 1."""
        names = list(self.cores)
        mean_u = sum(self.utilisation(n) for n in names) / len(names)
        mean_p = sum(self.psi(n) for n in names) / len(names)
        du, dp = max(0.0, self.utilisation(node) - mean_u), max(0.0, self.psi(node) - mean_p)
        return min(1.0, 3 * (du**2 + dp**2) ** 0.5)

    def snapshot(self, now: float) -> ClusterSnapshot:
        self.now = now
        nodes = [
            NodeState(
                name,
                cores,
                256 * GIB,
                dict(SCHEDULABLE),
                tuple(Taint(k, "true", "PreferNoSchedule") for k in sorted(self.taints[name])),
                True,
                True,
                NodePressure(
                    now - 5,
                    score=self.score(name),
                    psi_cpu=self.psi(name),
                    psi_memory=0.0,
                    cpu_utilization=min(1.0, self.utilisation(name)),
                ),
            )
            for name, cores in self.cores.items()
        ]
        return ClusterSnapshot(tuple(nodes), tuple(self.vms.values()), (), now)

    def apply(self, plan: Plan, now: float, duration: float = 30.0) -> None:
        for change in plan.taint_changes:
            (self.taints[change.node].add if change.action == "add" else self.taints[change.node].discard)(change.key)
        for move in plan.moves:
            vm = self.vms[move.vm]
            target = move.target or self._scheduler_pick(vm)
            past = PastMigration(now, now + duration, vm.node, target)
            self.vms[vm.key] = replace(vm, node=target, history=(*vm.history, past))
            self.moves.append((now, vm.key, vm.node, target))

    def _scheduler_pick(self, vm: VMState) -> str:
        others = [n for n in self.cores if n != vm.node]
        return min(others, key=lambda n: (len(self.taints[n]), self.utilisation(n), n))


def in_flight(vm: str, source: str, target: str | None = None, phase: str = "Running") -> MigrationState:
    return MigrationState(vm, source, target, phase, NOW - 20)
