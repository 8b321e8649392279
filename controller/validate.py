"""Checks at the door: a controller that is unsure of its inputs does nothing and says precisely why.

Why it exists: the descheduler acts on whatever Prometheus returns at query time (no staleness check, ref §2.2) and
aborts a whole cycle with a terse error when one node is missing (pain point 6, ref §5). Here every input the plan
depends on is checked before any decision: Prometheus reachable, every node of the population present, values
finite and in [0, 1], samples younger than `metrics.maxAgeSeconds`, the cluster snapshot itself fresh and
well-formed. The first failing rule becomes the plan's `skipped` reason, naming up to three nodes, e.g.
"metrics stale: node-3 last sample 95s old > 60s".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from controller.config import ControllerConfig
from controller.model import NodePressure
from controller.view import ClusterView

CLOCK_SKEW_SECONDS = 5.0  # a sample this far in the future means the clocks disagree
PRESSURE_FIELDS = ("score", "psi_cpu", "psi_memory", "psi_io", "cpu_utilization", "memory_utilization")
VM_FIELDS = ("cpu_request", "memory_request", "cpu_usage", "memory_usage", "memory_size", "dirty_rate")
SHOWN = 3
# every code check_inputs can return: a cycle skipped for one of these did not trust its inputs (the shell counts
# them apart from a policy finding nothing to do)
INPUT_CODES = frozenset(
    {
        "metrics-unavailable",
        "snapshot-stale",
        "invalid-snapshot",
        "too-few-nodes",
        "metrics-missing",
        "metrics-invalid",
        "metrics-out-of-range",
        "metrics-stale",
    }
)


@dataclass(frozen=True)
class Verdict:
    code: str | None = None  # short label for metrics: "metrics-stale", ...; None when the inputs are usable
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


def check_inputs(view: ClusterView, config: ControllerConfig) -> Verdict:
    """Return the first problem found, in order: source, snapshot, population, then per-node metrics, then VMs."""
    snapshot, now, max_age = view.snapshot, view.now, config.metrics.max_age_seconds
    if snapshot.metrics_error:
        return Verdict("metrics-unavailable", f"metrics unavailable: {snapshot.metrics_error}")
    age = now - snapshot.taken_at
    if age > max_age:
        return Verdict("snapshot-stale", f"cluster snapshot {age:.0f}s old > {max_age:.0f}s")
    duplicates = _duplicates([n.name for n in snapshot.nodes]) or _duplicates([vm.key for vm in snapshot.vms])
    if duplicates:
        return Verdict("invalid-snapshot", f"duplicate objects in snapshot: {_names(duplicates)}")
    if len(view.population) <= 1:  # the descheduler's loop skips the same way (ref §2.1)
        return Verdict("too-few-nodes", f"{len(view.population)} Ready node(s) match nodeSelector; need at least 2")
    for rule in (_missing, _not_finite, _out_of_range, _stale):
        verdict = rule(view, config.required_signals(), max_age)
        if not verdict.ok:
            return verdict
    return _bad_objects(view)


def _missing(view: ClusterView, required: tuple[str, ...], max_age: float) -> Verdict:
    absent = [n.name for n in view.population if n.pressure is None]
    if absent:
        total = len(view.population)
        return Verdict("metrics-missing", f"metrics missing for {_names(absent)} ({len(absent)} of {total} nodes)")
    for field in required:
        lacking = [n.name for n in view.population if getattr(n.pressure, field) is None]
        if lacking:
            return Verdict("metrics-missing", f"metrics missing: {_names(lacking)} has no {field} sample")
    return Verdict()


def _not_finite(view: ClusterView, required: tuple[str, ...], max_age: float) -> Verdict:
    bad = [f"{name} {field} is {value}" for name, field, value in _values(view) if not math.isfinite(value)]
    return Verdict("metrics-invalid", f"metrics invalid: {_names(bad)}") if bad else Verdict()


def _out_of_range(view: ClusterView, required: tuple[str, ...], max_age: float) -> Verdict:
    bad = [f"{name} {field} {value:g} outside [0, 1]" for name, field, value in _values(view) if not 0 <= value <= 1]
    return Verdict("metrics-out-of-range", f"metrics out of range: {_names(bad)}") if bad else Verdict()


def _stale(view: ClusterView, required: tuple[str, ...], max_age: float) -> Verdict:
    old, future = [], []
    for node in view.population:
        pressure: NodePressure = node.pressure  # type: ignore[assignment]  # _missing ran first
        age = view.now - pressure.sampled_at
        if age > max_age:
            old.append(f"{node.name} last sample {age:.0f}s old > {max_age:.0f}s")
        elif age < -CLOCK_SKEW_SECONDS:
            future.append(f"{node.name} sample {-age:.0f}s in the future")
    if old:
        return Verdict("metrics-stale", f"metrics stale: {_names(old)}")
    if future:
        return Verdict("metrics-invalid", f"metrics invalid (clock skew?): {_names(future)}")
    return Verdict()


def _bad_objects(view: ClusterView) -> Verdict:
    bad = []
    for node in view.population:
        for field in ("cpu_allocatable", "memory_allocatable"):
            value = getattr(node, field)
            if not (math.isfinite(value) and value > 0):
                bad.append(f"node {node.name} {field} {value}")
    inf = math.inf
    for vm in view.snapshot.vms:
        u, m, d = vm.cpu_usage, vm.memory_usage, vm.dirty_rate
        if (  # NaN fails both comparisons; written out because this runs for every VM of the cluster
            0 <= vm.cpu_request < inf
            and 0 <= vm.memory_request < inf
            and 0 <= vm.memory_size < inf
            and (u is None or 0 <= u < inf)
            and (m is None or 0 <= m < inf)
            and (d is None or 0 <= d < inf)
        ):
            continue
        values = (vm.cpu_request, vm.memory_request, u, m, vm.memory_size, d)
        for field, value in zip(VM_FIELDS, values, strict=True):
            if value is not None and not 0 <= value < math.inf:
                bad.append(f"vm {vm.key} {field} {value}")
    return Verdict("invalid-snapshot", f"invalid cluster objects: {_names(bad)}") if bad else Verdict()


def _values(view: ClusterView) -> Iterator[tuple[str, str, float]]:
    for node in view.population:
        for field in PRESSURE_FIELDS:
            value = getattr(node.pressure, field)
            if value is not None:
                yield node.name, field, value


def _duplicates(names: list[str]) -> list[str]:
    return [name for name, count in Counter(names).items() if count > 1]


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown} and {len(items) - SHOWN} more"
