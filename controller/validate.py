"""Checks at the door: a controller that is unsure of its inputs does nothing there and says precisely why.

Why it exists: the descheduler acts on whatever Prometheus returns at query time (no staleness check, ref §2.2) and
aborts a whole cycle with a terse error when one node is missing (pain point 6, ref §5). Here every input the plan
depends on is checked before any decision, and the controller degrades per node rather than per cluster:

- cluster rules skip the whole cycle (`Verdict.code`): Prometheus unreachable, the cluster snapshot stale or
  malformed (duplicates, a node's allocatable or a VM's figures invalid), fewer than 2 Ready selected nodes;
- node rules (`node_verdict`, in order: missing, non-finite, out of [0, 1], older than `metrics.maxAgeSeconds` or
  in the future) make one node untrusted (`Verdict.untrusted`): plan() leaves it out of this cycle's population
  (never a source, never a target, its taints untouched) and the cycle goes on for the others;
- unless too few trusted nodes remain (fewer than 2, or fewer than `metrics.minTrustedFraction` of the
  population): then the whole cycle is skipped with the code of the commonest node rule, naming the nodes, e.g.
  "3 of 4 nodes untrusted (need 2 trusted): node-2 (metrics stale: last sample 95s old > 60s); ...".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from controller.config import ControllerConfig
from controller.model import NodeState
from controller.view import ClusterView

CLOCK_SKEW_SECONDS = 5.0  # a sample this far in the future means the clocks disagree
PRESSURE_FIELDS = ("score", "psi_cpu", "psi_memory", "psi_io", "cpu_utilization", "memory_utilization")
VM_FIELDS = ("cpu_request", "memory_request", "cpu_usage", "memory_usage", "memory_size", "dirty_rate")
SHOWN = 3
# the codes a node rule gives an untrusted node, in the order the rules run
NODE_CODES = ("metrics-missing", "metrics-invalid", "metrics-out-of-range", "metrics-stale")
# every code check_inputs can return: a cycle skipped for one of these did not trust its inputs (the shell counts
# them apart from a policy finding nothing to do)
INPUT_CODES = frozenset({"metrics-unavailable", "snapshot-stale", "invalid-snapshot", "too-few-nodes", *NODE_CODES})


@dataclass(frozen=True)
class NodeVerdict:
    """Why one node's metrics are not trusted this cycle."""

    node: str
    code: str  # one of NODE_CODES
    reason: str  # e.g. "metrics stale: last sample 95s old > 60s"


@dataclass(frozen=True)
class Verdict:
    code: str | None = None  # short label for metrics: "metrics-stale", ...; None when the cycle may go on
    reason: str | None = None
    untrusted: tuple[NodeVerdict, ...] = ()  # population nodes left out of this cycle (when the cycle goes on)

    @property
    def ok(self) -> bool:
        return self.code is None


def check_inputs(view: ClusterView, config: ControllerConfig) -> Verdict:
    """The first cluster-level problem, in order: source, snapshot, population, too few trusted nodes, cluster
    objects; else a verdict that lets the cycle go on, listing the untrusted nodes."""
    snapshot, now, max_age = view.snapshot, view.now, config.metrics.max_age_seconds
    if snapshot.metrics_error:
        return Verdict("metrics-unavailable", f"metrics unavailable: {snapshot.metrics_error}")
    age = now - snapshot.taken_at
    if age > max_age:
        return Verdict("snapshot-stale", f"cluster snapshot {age:.0f}s old > {max_age:.0f}s")
    # the view's dicts are keyed by name: shorter than the snapshot's tuples only when a name repeats
    unique = len(view.nodes) == len(snapshot.nodes) and len(view.vms) == len(snapshot.vms)
    duplicates = (
        [] if unique else _duplicates([n.name for n in snapshot.nodes]) or _duplicates([vm.key for vm in snapshot.vms])
    )
    if duplicates:
        return Verdict("invalid-snapshot", f"duplicate objects in snapshot: {_names(duplicates)}")
    if len(view.population) <= 1:  # the descheduler's loop skips the same way (ref §2.1)
        return Verdict("too-few-nodes", f"{len(view.population)} Ready node(s) match nodeSelector; need at least 2")
    required = config.required_signals()
    untrusted = tuple(v for n in view.population if (v := node_verdict(n, required, now, max_age)) is not None)
    total, trusted = len(view.population), len(view.population) - len(untrusted)
    need = max(2, math.ceil(config.metrics.min_trusted_fraction * total - 1e-9))
    if trusted < need:
        codes = Counter(v.code for v in untrusted)
        code = max(NODE_CODES, key=lambda c: (codes[c], -NODE_CODES.index(c)))
        details = [f"{v.node} ({v.reason})" for v in untrusted]
        reason = f"{len(untrusted)} of {total} nodes untrusted (need {need} trusted): " + _names(details, "; ")
        return Verdict(code, reason, untrusted)
    objects = _bad_objects(view)
    return objects if not objects.ok else Verdict(untrusted=untrusted)


NodeRule = Callable[[NodeState, tuple[str, ...], float, float], tuple[str, str] | None]


def node_verdict(node: NodeState, required: tuple[str, ...], now: float, max_age: float) -> NodeVerdict | None:
    """The first node rule `node` fails, as a verdict, or None when its metrics can be trusted this cycle."""
    for rule in _NODE_RULES:
        problem = rule(node, required, now, max_age)
        if problem is not None:
            return NodeVerdict(node.name, *problem)
    return None


def _missing(node: NodeState, required: tuple[str, ...], now: float, max_age: float) -> tuple[str, str] | None:
    if node.pressure is None:
        return "metrics-missing", "metrics missing: absent from the query results"
    lacking = [field for field in required if getattr(node.pressure, field) is None]
    return ("metrics-missing", f"metrics missing: no {', '.join(lacking)} sample") if lacking else None


def _not_finite(node: NodeState, required: tuple[str, ...], now: float, max_age: float) -> tuple[str, str] | None:
    bad = [f"{field} is {value}" for field, value in _values(node) if not math.isfinite(value)]
    return ("metrics-invalid", f"metrics invalid: {', '.join(bad)}") if bad else None


def _out_of_range(node: NodeState, required: tuple[str, ...], now: float, max_age: float) -> tuple[str, str] | None:
    bad = [f"{field} {value:g} outside [0, 1]" for field, value in _values(node) if not 0 <= value <= 1]
    return ("metrics-out-of-range", f"metrics out of range: {', '.join(bad)}") if bad else None


def _stale(node: NodeState, required: tuple[str, ...], now: float, max_age: float) -> tuple[str, str] | None:
    assert node.pressure is not None  # _missing ran first
    age = now - node.pressure.sampled_at
    if age > max_age:
        return "metrics-stale", f"metrics stale: last sample {age:.0f}s old > {max_age:.0f}s"
    if age < -CLOCK_SKEW_SECONDS:
        return "metrics-invalid", f"metrics invalid (clock skew?): sample {-age:.0f}s in the future"
    return None


_NODE_RULES: tuple[NodeRule, ...] = (_missing, _not_finite, _out_of_range, _stale)


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


def _values(node: NodeState) -> Iterator[tuple[str, float]]:
    for field in PRESSURE_FIELDS:
        value = getattr(node.pressure, field)
        if value is not None:
            yield field, value


def _duplicates(names: list[str]) -> list[str]:
    return [name for name, count in Counter(names).items() if count > 1]


def _names(items: list[str], sep: str = ", ") -> str:
    shown = sep.join(items[:SHOWN])
    return shown if len(items) <= SHOWN else f"{shown} and {len(items) - SHOWN} more"
