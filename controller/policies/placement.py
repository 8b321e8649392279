"""psi-relief's search: the fewest (then cheapest) moves that relieve every source without overheating a target.

Why it exists: choosing which VMs to move and where is a small covering/packing problem, and a greedy pass is
fast but can need one move more than necessary (two dimensions, targets that fill up). Both are run; the plan
with the lower objective wins, so the exact search can only improve on greedy.

In utilisation units (the pressure model makes every threshold a utilisation ceiling), with x[v,t] = 1 when VM v
moves to node t and y[s,d] in [0,1] the part of source s's required reduction R[s,d] left uncovered:

    minimise    sum cost[v] x[v,t]  +  P * sum y[s,d]                      (P = 10: a move costs 1 to 1.5)
    subject to  sum_{v on s, t} x[v,t] * delta[v,d] / R[s,d] + y[s,d] >= 1     every source s, dimension d
                sum_t x[v,t] <= 1                                              every VM
                sum_v x[v,t] * load[v,d] / alloc[t,d] <= headroom[t,d]         every target, dimension
                sum_v x[v,t] * request[v,r] <= free request[t,r]               every target, cpu and memory
                sum_{v on s,t} x[v,t] <= allowance[s],   sum x <= total allowance  (the budget's remaining room)

Greedy: sources by decreasing pressure; for each, repeatedly take the VM with the best covered-requirement per
cost that has a feasible target, placed on the target predicted coolest after the move, while a move is worth
its cost (covered fraction * P >= cost). Exact: scipy.optimize.milp (HiGHS) on the `candidatesPerSource` best
VMs per source and the `targetsConsidered` coolest targets, when that has at most `exactMaxVariables`
variables; the node limit keeps it deterministic and bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from controller.config import SearchConfig
from controller.model import VMState

UNCOVERED_PENALTY = 10.0
EPS = 1e-9


@dataclass(frozen=True)
class Candidate:
    vm: VMState
    source: int
    delta: np.ndarray  # (2,) utilisation it removes from its source
    load: np.ndarray  # (2,) cores, bytes
    request: np.ndarray  # (2,) cores, bytes the target must have free
    cost: float
    seconds: float
    allowed: np.ndarray  # (n,) bool: targets the VM may go to


@dataclass
class Problem:
    requirement: dict[int, np.ndarray]  # source -> (2,) utilisation to remove; insertion order = priority
    allowance: dict[int, int]
    total_allowance: int
    candidates: dict[int, list[Candidate]]
    alloc: np.ndarray  # (n, 2)
    usage: np.ndarray  # (n, 2) utilisation now
    ceiling: np.ndarray  # (n, 2) utilisation a target may reach
    free_request: np.ndarray  # (n, 2)
    predict: Callable[[np.ndarray], np.ndarray]  # (n, 2) utilisation -> (n,) signal


@dataclass(frozen=True)
class Assignment:
    candidate: Candidate
    target: int


def solve(problem: Problem, search: SearchConfig) -> list[Assignment]:
    greedy = greedy_plan(problem)
    if search.exact_max_variables > 0:
        exact = exact_plan(problem, search)
        if exact is not None and objective(problem, exact) < objective(problem, greedy) - 1e-6:
            return exact
    return greedy


def objective(problem: Problem, plan: list[Assignment]) -> float:
    covered = {s: np.zeros(2) for s in problem.requirement}
    for a in plan:
        covered[a.candidate.source] += a.candidate.delta
    uncovered = 0.0
    for s, need in problem.requirement.items():
        active = need > EPS
        uncovered += float(np.clip(1 - covered[s][active] / need[active], 0, 1).sum())
    return sum(a.candidate.cost for a in plan) + UNCOVERED_PENALTY * uncovered


def _gain(c: Candidate, remaining: np.ndarray, need: np.ndarray) -> float:
    active = need > EPS
    return float((np.minimum(c.delta[active], remaining[active]) / need[active]).sum())


def greedy_plan(problem: Problem) -> list[Assignment]:
    usage, free = problem.usage.copy(), problem.free_request.copy()
    total, plan = problem.total_allowance, []
    for s, need in problem.requirement.items():
        remaining, allowance, used = need.copy(), problem.allowance.get(s, 0), set()
        while total > 0 and allowance > 0 and (remaining > EPS).any():
            pool = [(i, c) for i, c in enumerate(problem.candidates.get(s, ())) if i not in used]
            ranked = sorted(
                ((_gain(c, remaining, need), i, c) for i, c in pool),
                key=lambda item: (-item[0] / item[2].cost, item[1]),
            )
            choice = None
            for gain, i, c in ranked:
                if gain * UNCOVERED_PENALTY < c.cost:
                    continue
                target = _best_target(problem, c, usage, free)
                if target is not None:
                    choice = (i, c, target)
                    break
            if choice is None:
                break
            i, c, target = choice
            used.add(i)
            usage[target] += c.load / problem.alloc[target]
            free[target] -= c.request
            remaining = np.maximum(remaining - c.delta, 0.0)
            total, allowance = total - 1, allowance - 1
            plan.append(Assignment(c, target))
    return plan


def _best_target(problem: Problem, c: Candidate, usage: np.ndarray, free: np.ndarray) -> int | None:
    after = usage + c.load / problem.alloc
    fits = c.allowed & (after <= problem.ceiling + EPS).all(axis=1) & (free >= c.request - EPS).all(axis=1)
    if not fits.any():
        return None
    predicted = np.where(fits, problem.predict(after), np.inf)
    return int(np.argmin(predicted))


def exact_plan(problem: Problem, search: SearchConfig) -> list[Assignment] | None:
    pool = _candidate_pool(problem, search.candidates_per_source)
    targets = np.array(_target_pool(problem, search.targets_considered), int)
    slacks = [(s, d) for s, need in problem.requirement.items() for d in range(2) if need[d] > EPS]
    if not pool or targets.size == 0:
        return None
    loads, requests = np.array([c.load for c in pool]), np.array([c.request for c in pool])
    alloc, usage = problem.alloc[targets], problem.usage[targets]
    after = usage[None] + loads[:, None, :] / alloc[None]
    fits = np.array([c.allowed[targets] for c in pool])
    fits &= (after <= problem.ceiling[targets][None] + EPS).all(axis=2)
    fits &= (problem.free_request[targets][None] >= requests[:, None, :] - EPS).all(axis=2)
    vm_of, target_of = np.nonzero(fits)  # variable j: pool[vm_of[j]] -> targets[target_of[j]]
    n_x = vm_of.size
    if n_x == 0 or n_x + len(slacks) > search.exact_max_variables:
        return None
    sources = np.array([c.source for c in pool])[vm_of]
    deltas = np.array([c.delta for c in pool])[vm_of]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    lower: list[float] = []
    upper: list[float] = []

    def add(columns: np.ndarray, values: np.ndarray, lo: float, hi: float) -> None:
        rows.append(np.full(columns.size, len(lower)))
        cols.append(columns)
        vals.append(values)
        lower.append(lo)
        upper.append(hi)

    every = np.arange(n_x)
    for j, (s, d) in enumerate(slacks):  # coverage of each source's requirement, slack y = n_x + j
        mine = every[(sources == s) & (deltas[:, d] > 0)]
        add(np.append(mine, n_x + j), np.append(deltas[mine, d] / problem.requirement[s][d], 1.0), 1.0, np.inf)
    for v in range(len(pool)):  # one target per VM
        add(every[vm_of == v], np.ones(int((vm_of == v).sum())), 0.0, 1.0)
    for t in range(targets.size):  # target headroom and free requests, per dimension
        mine = every[target_of == t]
        for d in range(2):
            headroom = problem.ceiling[targets[t], d] - usage[t, d]
            add(mine, loads[vm_of[mine], d] / alloc[t, d], -np.inf, headroom)
            add(mine, requests[vm_of[mine], d], -np.inf, problem.free_request[targets[t], d])
    for s, allowance in problem.allowance.items():  # the budget's room per source and in total
        add(every[sources == s], np.ones(int((sources == s).sum())), 0.0, allowance)
    add(every, np.ones(n_x), 0.0, problem.total_allowance)
    size = (len(lower), n_x + len(slacks))
    matrix = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=size).tocsr()
    cost = np.concatenate([[pool[v].cost for v in vm_of], np.full(len(slacks), UNCOVERED_PENALTY)])
    result = milp(
        cost,
        integrality=np.concatenate([np.ones(n_x), np.zeros(len(slacks))]),
        bounds=Bounds(np.zeros(cost.size), np.ones(cost.size)),
        constraints=LinearConstraint(matrix, lower, upper),
        options={"node_limit": search.exact_node_limit, "presolve": True},
    )
    if result.x is None:
        return None
    chosen = np.flatnonzero(result.x[:n_x] > 0.5)
    return [Assignment(pool[vm_of[j]], int(targets[target_of[j]])) for j in chosen]


def _candidate_pool(problem: Problem, per_source: int) -> list[Candidate]:
    pool = []
    for s, need in problem.requirement.items():
        ranked = sorted(problem.candidates.get(s, ()), key=lambda c: (-_gain(c, need, need) / c.cost, c.vm.key))
        pool.extend(ranked[:per_source])
    return pool


def _target_pool(problem: Problem, size: int) -> list[int]:
    headroom = (problem.ceiling - problem.usage).min(axis=1)
    eligible = np.flatnonzero(headroom > 0)
    coolest = eligible[np.argsort(problem.predict(problem.usage)[eligible], kind="stable")]
    return [int(t) for t in coolest[:size]]
