"""An exact lower bound on the migrations any rebalancer needs: a small MILP solved with scipy.optimize.milp.

Why it exists: "fewer migrations" means little without knowing how few are possible. For one moment of the run
(the VMs' CPU demands when the controller starts) this computes the fewest VM moves after which no node's CPU
pressure can exceed the threshold, so a policy's migration count can be read against it.

Model (pure; time is not involved):

    x[v,n] in {0,1}          VM v runs on node n after the moves
    minimise   sum_v sum_{n != home(v)} x[v,n]                         (the number of VMs moved)
    subject to sum_n x[v,n] = 1                                        each VM on one node
               sum_v demand[v] x[v,n] <= cpu_room[n]                   each node under the pressure threshold
               sum_v memory[v] x[v,n] <= memory_room[n]                requests fit (the scheduler's rule)
               x[v,home(v)] = 1 for VMs that cannot live-migrate

`cpu_room[n]` is the largest CPU demand (cores, host processes excluded) at which the twin's own PSI model keeps
the node's CPU "some" at or under the threshold when that demand is carried by fully busy threads. Fully busy
threads are the least pressure any mix of VMs can produce at a given mean demand (PSI grows with the variance of
the number of runnable threads), so every placement that really keeps a node under the threshold satisfies this
constraint: the optimum is a lower bound, not an estimate. Node selectors, taints, PDBs and the time a migration
takes are left out, which can only lower the bound further. `min_moves` is None when the instance is larger than
`max_variables`, when the solver does not prove optimality within its time limit, or when no placement satisfies
the constraints; `lower_bound` then falls back to the solver's proven bound at its time limit, or above
`max_variables` to the LP relaxation's optimum rounded up, and says which (`LowerBound.kind`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from sim.cluster.kv_objects import LIVE_MIGRATABLE
from sim.cluster.psi import PsiParams, ThreadGroup, cpu_contention
from sim.cluster.state_view import NodeInfo, VmiInfo
from sim.cluster.telemetry_state import Sample

MAX_VARIABLES = 20_000


@dataclass(frozen=True)
class BoundNode:
    name: str
    cores: float
    memory_bytes: float  # allocatable memory for VM requests
    host_cpu: float = 0.0  # cores the host keeps busy on its own


@dataclass(frozen=True)
class BoundVm:
    key: str
    node: str
    cpu_demand: float  # cores it wants
    memory_bytes: float  # what it requests on a node
    movable: bool = True


def cpu_room(cores: float, host_cpu: float, threshold: float, params: PsiParams | None = None) -> float:
    """The largest VM demand (cores) on a node of `cores` cores whose CPU some stays <= threshold (bisection)."""

    params = params or PsiParams()

    def some(demand: float) -> float:
        groups = [ThreadGroup.cores(demand)] if demand > 0 else []
        if host_cpu > 0:
            groups.append(ThreadGroup.cores(host_cpu))
        return cpu_contention(cores, groups, params).some

    lo, hi = 0.0, 2.0 * cores
    if some(lo) > threshold:
        return 0.0
    if some(hi) <= threshold:
        return hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if some(mid) <= threshold else (lo, mid)
    return lo


@dataclass(frozen=True)
class LowerBound:
    """A lower bound on the moves needed and how it was proven."""

    value: int | None
    kind: str  # "exact" (the MILP's optimum), "time-limited" (the solver's best proven bound when its time ran out),
    # "LP relaxation" (ceil of the relaxation's optimum, for instances above max_variables), or "none"


def lower_bound(
    nodes: Sequence[BoundNode],
    vms: Sequence[BoundVm],
    threshold: float,
    *,
    max_variables: int = MAX_VARIABLES,
    time_limit_s: float = 20.0,
    rooms: Mapping[str, float] | None = None,
) -> LowerBound:
    """The best lower bound computable within the limits: the exact MILP optimum when it is proven in time, else the
    solver's proven bound at its time limit; above `max_variables` the LP relaxation (x in [0, 1]), whose optimum
    rounded up is still a lower bound on any integer placement. Kind "none" when no placement is feasible or
    nothing was proven."""
    exact = _solve(nodes, vms, threshold, time_limit_s, rooms, relax=False, max_variables=max_variables)
    if exact is not None:
        return exact
    names = {n.name for n in nodes}
    if len(nodes) * sum(vm.node in names for vm in vms) > max_variables:  # what _solve counts: the VMs placed
        relaxed = _solve(nodes, vms, threshold, time_limit_s, rooms, relax=True, max_variables=None)
        if relaxed is not None:
            return relaxed
    return LowerBound(None, "none")


def min_moves(
    nodes: Sequence[BoundNode],
    vms: Sequence[BoundVm],
    threshold: float,
    *,
    max_variables: int = MAX_VARIABLES,
    time_limit_s: float = 20.0,
    rooms: Mapping[str, float] | None = None,
) -> int | None:
    """The fewest moves that bring every node under `threshold` (see the module docstring), or None."""
    found = _solve(nodes, vms, threshold, time_limit_s, rooms, relax=False, max_variables=max_variables)
    return found.value if found is not None and found.kind == "exact" else None


def _solve(
    nodes: Sequence[BoundNode],
    vms: Sequence[BoundVm],
    threshold: float,
    time_limit_s: float,
    rooms: Mapping[str, float] | None,
    *,
    relax: bool,
    max_variables: int | None,
) -> LowerBound | None:
    """The MILP (or, with `relax`, its LP relaxation): a LowerBound, or None when nothing was proven."""
    names = [n.name for n in nodes]
    index = {n: i for i, n in enumerate(names)}
    placed = [vm for vm in vms if vm.node in index]
    n_nodes, n_vms = len(names), len(placed)
    if n_vms == 0:
        return LowerBound(0, "exact")
    if max_variables is not None and n_vms * n_nodes > max_variables:
        return None
    room = rooms if rooms is not None else {n.name: cpu_room(n.cores, n.host_cpu, threshold) for n in nodes}
    size = n_vms * n_nodes

    def var(v: int, n: int) -> int:
        return v * n_nodes + n

    cost = np.ones(size)
    lower, upper = np.zeros(size), np.ones(size)
    for v, vm in enumerate(placed):
        home = index[vm.node]
        cost[var(v, home)] = 0.0
        if not vm.movable:
            lower[var(v, home)] = 1.0
    one = lil_matrix((n_vms, size))
    for v in range(n_vms):
        for n in range(n_nodes):
            one[v, var(v, n)] = 1.0
    cpu, mem = lil_matrix((n_nodes, size)), lil_matrix((n_nodes, size))
    for v, vm in enumerate(placed):
        for n in range(n_nodes):
            cpu[n, var(v, n)] = vm.cpu_demand
            mem[n, var(v, n)] = vm.memory_bytes / 2**30  # GiB keeps the coefficients well scaled
    constraints = [
        LinearConstraint(one.tocsr(), 1.0, 1.0),
        LinearConstraint(cpu.tocsr(), -np.inf, np.array([room[name] for name in names])),
        LinearConstraint(mem.tocsr(), -np.inf, np.array([n.memory_bytes / 2**30 for n in nodes])),
    ]
    result = milp(
        cost,
        constraints=constraints,
        integrality=np.zeros(size) if relax else np.ones(size),
        bounds=Bounds(lower, upper),
        options={"time_limit": time_limit_s},
    )
    if result.status == 0 and result.x is not None:  # optimal
        if relax:
            return LowerBound(int(np.ceil(result.fun - 1e-6)), "LP relaxation")
        return LowerBound(round(result.fun), "exact")
    proven = getattr(result, "mip_dual_bound", None)  # 1: time limit; what the search had proven by then
    if not relax and result.status == 1 and proven is not None and np.isfinite(proven):
        return LowerBound(max(0, int(np.ceil(proven - 1e-6))), "time-limited")
    return None  # 2: infeasible, or nothing proven


def bound_inputs(
    nodes: list[NodeInfo], vmis: list[VmiInfo], vmi_objects: list[dict[str, Any]], sample: Sample, host_cpu: float
) -> tuple[list[BoundNode], list[BoundVm]]:
    """Node sizes and VM CPU demands now (a VM's demand: what it gets, over the share its node serves)."""
    bound_nodes = [
        # PSI counts contention for the node's cores (capacity); requests must fit what is allocatable
        BoundNode(n.name, n.cpu_millis / 1000, n.allocatable_memory_bytes, host_cpu)
        for n in nodes
        if n.ready and not n.unschedulable
    ]
    requests = {f"{v.namespace}/{v.name}": v.memory_bytes for v in vmis}
    frozen = set()
    for obj in vmi_objects:
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c.get("type") == LIVE_MIGRATABLE and c.get("status") == "False" for c in conditions):
            frozen.add(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
        strategy = (obj.get("spec") or {}).get("evictionStrategy")
        if strategy == "None":
            frozen.add(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
    vms = []
    for vm in sample.vms:
        key = f"{vm.namespace}/{vm.name}"
        node = sample.nodes.get(vm.node)
        served = node.pressure.cpu.served if node is not None else 1.0
        demand = vm.cpu_cores / served if served > 0 else vm.cpu_cores
        vms.append(BoundVm(key, vm.node, demand, requests.get(key, vm.memory_domain), key not in frozen))
    return bound_nodes, vms
