"""`PsiReliefPolicy`: relieve pressured nodes with the fewest, cheapest live migrations, to explicit targets.

Why it exists: it is the controller's own policy, built to beat the descheduler profile on its pain points (ref
§5): it predicts what a move does (pressure_model.py) instead of moving one VM per node and looking again, picks
the moves as a whole (placement.py), names the target (a VirtualMachineInstanceMigration's `addedNodeSelector`,
ref §3), and damps itself so that nothing ping-pongs.

Per cycle, with s the node signal (PSI "some" of the configured dimensions, or the score) and the thresholds
high > targetThreshold >= low:
- class: over when s > high; under when s <= low and schedulable; appropriate otherwise (for the soft taints).
- source: s > high, or s > low while relieving (an outbound move in flight or ended within
  `hysteresisMemorySeconds`): act above high, keep going until under low. Not a source: a node whose last
  move in or out ended less than `nodeCooldownSeconds` ago (its metrics have not settled; a VM's warm-up on
  arrival is not pressure to relieve), or whose pressure utilisation cannot explain (pain 4).
- requirement: the utilisation to remove so the predicted signal (in-flight moves included) is <= low.
- candidates: VMs on the source the `MigrationBudget` accepts (safety, per-VM cooldown that grows with repeated
  moves) whose migration converges (migration_cost.py).
- targets: schedulable, not a source, not saturated (pressure_model.py: at the CPU knee whatever arrives
  queues whole), predicted <= targetThreshold after every move placed on it (so a target
  stays well under high and never becomes the next source), requests fit, the VM's
  nodeSelector and hard taints allow it; not a node relieved less than `nodeCooldownSeconds` ago; never a node
  the VM left less than `vmReturnBlockSeconds` (or its current cooldown, if longer) ago: no ping-pong.
- budget: the search may use only the budget's remaining room (per source and cluster), then each move is
  admitted through `MigrationBudget.admit` like any other. With room for m moves, only the 4m most pressured
  sources are searched this cycle (the others "wait their turn"), which bounds the cost of a cluster-wide storm.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from controller.budget import MigrationBudget, Refused
from controller.classify import APPROPRIATE, OVER, UNDER
from controller.config import ControllerConfig
from controller.cooldown import CooldownRule
from controller.model import Move, NodeExplanation, Taint, VMState
from controller.policies import PolicyOutcome
from controller.policies.chains import CHAIN_SOURCES, Chain, ChainSpace, RoomVm, find_chain
from controller.policies.descheduler_compatible import tolerates_node
from controller.policies.migration_cost import estimate_migration
from controller.policies.placement import Assignment, Candidate, Problem, solve
from controller.policies.pressure_model import PressureModel, build_model
from controller.view import ClusterView

HARD_EFFECTS = ("NoSchedule", "NoExecute")
SOURCES_PER_MOVE = 4  # sources considered per move the budget allows this cycle, most pressured first


class PsiReliefPolicy:
    name = "psi-relief"

    def __init__(self, config: ControllerConfig) -> None:
        self.params = config.psi_relief
        self.cooldown = CooldownRule.from_config(self.params.vm_cooldown)

    def propose(self, view: ClusterView, budget: MigrationBudget) -> PolicyOutcome:
        p, now = self.params, view.now
        model = build_model(view, p)
        s_now = model.predict(model.u_now)
        last_out, last_in = _last_moves(view)
        schedulable = np.array([node.schedulable for node in view.population])
        classes = {name: _category(model.s_obs[i], schedulable[i], p.low, p.high) for i, name in enumerate(model.names)}
        notes: dict[str, str] = {}
        active: set[int] = set()
        requirement: dict[int, np.ndarray] = {}
        ceiling = model.ceiling(p.low)
        for i in np.argsort(-s_now, kind="stable"):
            name = model.names[i]
            recent_out = now - last_out.get(name, -np.inf) < p.hysteresis_memory_seconds
            relieving = view.outbound_in_flight.get(name, 0) > 0 or recent_out
            if not (model.s_obs[i] > p.high or (model.s_obs[i] > p.low and relieving)):
                continue
            active.add(int(i))
            settled = now - max(last_out.get(name, -np.inf), last_in.get(name, -np.inf))
            if model.unexplained[i]:
                notes[name] = f"pressure {model.s_obs[i]:.2f} not explained by utilisation (throttling?): left alone"
            elif settled < p.node_cooldown_seconds:
                notes[name] = f"node cooldown: last move {settled:.0f}s ago < {p.node_cooldown_seconds:.0f}s"
            else:
                need = np.where(model.k[i] > 0, np.maximum(model.u_now[i] - ceiling[i], 0.0), 0.0)
                if (need > 1e-9).any():
                    requirement[int(i)] = need
                else:
                    notes[name] = f"moves in flight bring it to {s_now[i]:.2f} <= low {p.low:g}"
        if not active:
            return self._outcome(model, classes, notes, [], ("no-pressured-node", f"no node above high {p.high:g}"))

        cooldown = p.node_cooldown_seconds
        recently_relieved = np.array([now - last_out.get(name, -np.inf) < cooldown for name in model.names])
        target_ceiling = model.ceiling(p.target_threshold)
        eligible = schedulable & ~recently_relieved & ~model.unexplained & ~model.saturated
        eligible &= (model.u_now <= target_ceiling).all(axis=1)  # at its ceiling: a chain may keep it level
        eligible[list(active)] = False
        total, allowance = budget.remaining_total(), {i: budget.remaining_for(model.names[i]) for i in requirement}
        considered = [i for i in requirement if allowance[i] > 0][: total * SOURCES_PER_MOVE]
        targets = _TargetIndex(view)
        problem = Problem(
            requirement={i: requirement[i] for i in considered},
            allowance={i: allowance[i] for i in considered},
            total_allowance=total,
            candidates={i: self._candidates(view, model, budget, i, eligible, targets) for i in considered},
            alloc=model.alloc,
            usage=model.u_now,
            ceiling=np.where(eligible[:, None], target_ceiling, -1.0),
            free_request=model.alloc - model.requested,
            predict=model.predict,
        )
        moves = self._moves(model, s_now, solve(problem, p.search), budget)
        moves += self._chains(view, model, budget, problem, moves, notes, eligible, targets)
        for i in requirement:
            planned = sum(1 for m in moves if m.source == model.names[i])
            waiting = i not in considered and allowance[i] > 0
            why = "waits its turn" if waiting else _why_none(problem, i, allowance[i], total)
            notes.setdefault(model.names[i], f"{planned} move(s) planned" if planned else why)
        idle = None if moves else ("no-admissible-move", f"{len(active)} pressured node(s), no admissible move")
        return self._outcome(model, classes, notes, moves, idle)

    def _candidates(
        self,
        view: ClusterView,
        model: PressureModel,
        budget: MigrationBudget,
        i: int,
        eligible: np.ndarray,
        targets: _TargetIndex,
    ) -> list[Candidate]:
        out = []
        for vm in view.vms_by_node.get(model.names[i], ()):
            if isinstance(budget.check_vm(vm), Refused):
                continue
            estimate = estimate_migration(vm, self.params.migration)
            if estimate.problem:
                budget.refuse(vm.key, estimate.problem)
                continue
            load = model.demand(vm.key)  # what it brings to a target; it takes at least model.load off its source
            delta = model.load(vm.key) / model.alloc[i]
            if not (delta > 0).any():
                continue
            allowed = eligible & self._placeable(view, model, targets, vm)
            request = np.array([vm.cpu_request, vm.memory_request])
            out.append(Candidate(vm, i, delta, load, request, estimate.cost, estimate.seconds, allowed))
        return out

    def _chains(
        self,
        view: ClusterView,
        model: PressureModel,
        budget: MigrationBudget,
        problem: Problem,
        moves: list[Move],
        notes: dict[str, str],
        eligible: np.ndarray,
        targets: _TargetIndex,
    ) -> list[Move]:
        """Chains and swaps (chains.py) for the sources the single-move search left without any move."""
        relieved = {m.source for m in moves}
        pending = [i for i in problem.requirement if model.names[i] not in relieved and problem.candidates[i]]
        if not pending:
            return []
        if budget.remaining_total() < 2:
            for h in pending:
                notes[model.names[h]] = (
                    "no target can take its VMs and stay under targetThreshold; a chain or swap needs 2 moves, "
                    f"the budget has room for {budget.remaining_total()}"
                )
            return []
        space = ChainSpace(
            model.alloc, model.u_now.copy(), problem.free_request.copy(), problem.ceiling.copy(), model.predict
        )
        for m in moves:
            s, t = model.index[m.source], model.index[m.target or ""]
            vm = view.vms[m.vm]
            space.usage[s] -= model.load(m.vm) / model.alloc[s]
            space.usage[t] += model.demand(m.vm) / model.alloc[t]
            space.free[s] += (vm.cpu_request, vm.memory_request)
            space.free[t] -= (vm.cpu_request, vm.memory_request)
        cache: dict[int, list[RoomVm]] = {}

        def rooms(t: int) -> list[RoomVm]:
            if t not in cache:
                cache[t] = sorted(
                    self._room_vms(view, model, budget, t, eligible, targets),
                    key=lambda r: (r.candidate.request[1], r.candidate.cost, r.candidate.vm.key),
                )
            return cache[t]

        out: list[Move] = []
        used: set[str] = set()
        for h in pending[:CHAIN_SOURCES]:
            if budget.remaining_total() < 2 or budget.remaining_for(model.names[h]) < 1:
                break
            chain = find_chain(space, problem.requirement[h], problem.candidates[h], rooms, used)
            if chain is None:
                notes[model.names[h]] = (
                    "no target can take its VMs and stay under targetThreshold, and no chain or swap makes room"
                )
                continue
            pair = self._chain_moves(model, space, chain)
            refused = budget.admit_all(pair)
            if isinstance(refused, Refused):
                notes[model.names[h]] = f"chain refused by the budget: {refused.reason}"
                continue
            out += pair
            used |= {chain.hot.vm.key, chain.room.candidate.vm.key}
            space.ceiling[[chain.target, chain.third]] = -1.0  # its intermediate steps are planned on them
            kind = "swap" if chain.swap else "chain"
            notes[model.names[h]] = f"{kind} planned: {pair[0].vm} {pair[0].source}->{pair[0].target}, then " + (
                f"{pair[1].vm} {pair[1].source}->{pair[1].target} (no single move fits)"
            )
        return out

    def _room_vms(
        self,
        view: ClusterView,
        model: PressureModel,
        budget: MigrationBudget,
        t: int,
        eligible: np.ndarray,
        targets: _TargetIndex,
    ) -> list[RoomVm]:
        """VMs of target `t` that may leave it to make room: movable (cooldown included), converging."""
        out: list[RoomVm] = []
        if budget.remaining_for(model.names[t]) < 1:  # its per-node outbound limit: nothing may leave it
            return out
        for vm in view.vms_by_node.get(model.names[t], ()):
            if not budget.movable(vm):
                continue
            estimate = estimate_migration(vm, self.params.migration)
            if estimate.problem:
                continue
            request = np.array([vm.cpu_request, vm.memory_request])
            delta = model.load(vm.key) / model.alloc[t]
            c = Candidate(vm, t, delta, model.demand(vm.key), request, estimate.cost, estimate.seconds, eligible)
            out.append(RoomVm(c, partial(self._room_masks, view, model, targets, vm, eligible)))
        return out

    def _room_masks(
        self, view: ClusterView, model: PressureModel, targets: _TargetIndex, vm: VMState, eligible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        placeable = self._placeable(view, model, targets, vm)
        return eligible & placeable, placeable

    def _chain_moves(self, model: PressureModel, space: ChainSpace, chain: Chain) -> tuple[Move, Move]:
        """The chain's two moves, w first, with their predictions and reasons; `space` gets both applied."""
        p, v, w = self.params, chain.hot, chain.room.candidate
        h, t, u = v.source, chain.target, chain.third
        names, signal = model.names, lambda i: float(model.predict(space.usage[i], i))
        kind = "swap" if chain.swap else "chain"
        why = (
            f"psi-relief {kind}: {names[h]} at {model.s_obs[h]:.2f} (high {p.high:g}, low {p.low:g}) and no node can "
            f"take one of its VMs and stay under targetThreshold {p.target_threshold:g}; "
        )

        def step(c: Candidate, src: int, dst: int, what: str) -> Move:
            """`c` moves src -> dst in `space`; its Move with the predicted signals of both nodes."""
            before = (signal(src), signal(dst))
            space.apply(c, dst)
            after = (signal(src), signal(dst))
            flow = f"{names[src]} {before[0]:.2f}->{after[0]:.2f}, {names[dst]} {before[1]:.2f}->{after[1]:.2f}"
            reason = f"{why}{what}: {flow}, ~{c.seconds:.0f}s"
            return Move(c.vm.key, names[src], names[dst], reason, before[0], after[0], before[1], after[1], c.seconds)

        first = step(
            w,
            t,
            u,
            f"step 1/2: {w.vm.key} ({w.request[1] / 2**30:.1f} GiB) leaves {names[t]} for {names[u]} to make room for "
            f"{v.vm.key} ({v.request[1] / 2**30:.1f} GiB)",
        )
        what = f"step 2/2, once {w.vm.key} has left {names[t]}: {v.vm.key} removes {v.delta[0]:.0%} cpu / "
        second = step(v, h, t, what + f"{v.delta[1]:.0%} memory")
        return first, replace(second, after=w.vm.key)

    def _placeable(self, view: ClusterView, model: PressureModel, targets: _TargetIndex, vm: VMState) -> np.ndarray:
        """Targets allowed by the VM's nodeSelector, hard taints, and its return block (no ping-pong)."""
        allowed = np.ones(len(model.names), bool)
        for taints, members in targets.hard_taint_groups.items():
            if not tolerates_node(vm.tolerations, taints):
                allowed[members] = False
        for key, value in vm.node_selector.items():
            allowed &= targets.labels(key) == value
        block = max(self.params.vm_return_block_seconds, self.cooldown.effective(vm, view.now))
        for past in vm.history:
            if view.now - past.ended < block and past.source in model.index:
                allowed[model.index[past.source]] = False
        return allowed

    def _moves(
        self, model: PressureModel, s_now: np.ndarray, plan: list[Assignment], budget: MigrationBudget
    ) -> list[Move]:
        p, usage, moves = self.params, model.u_now.copy(), []
        order = sorted(plan, key=lambda a: (-s_now[a.candidate.source], -a.candidate.delta.max(), a.candidate.vm.key))
        for a in order:
            c, s, t = a.candidate, a.candidate.source, a.target
            src_before, tgt_before = float(model.predict(usage[s], s)), float(model.predict(usage[t], t))
            usage[s] -= c.delta
            usage[t] += c.load / model.alloc[t]
            src_after, tgt_after = float(model.predict(usage[s], s)), float(model.predict(usage[t], t))
            source, target = model.names[s], model.names[t]
            reason = (
                f"psi-relief: {source} at {model.s_obs[s]:.2f} (high {p.high:g}, low {p.low:g}); "
                f"{c.vm.key} removes {c.delta[0]:.0%} cpu / {c.delta[1]:.0%} memory: {source} {src_before:.2f}->"
                f"{src_after:.2f}, {target} {tgt_before:.2f}->{tgt_after:.2f}, ~{c.seconds:.0f}s"
            )
            move = Move(c.vm.key, source, target, reason, src_before, src_after, tgt_before, tgt_after, c.seconds)
            if not isinstance(budget.admit(move), Refused):
                moves.append(move)
        return moves

    def _outcome(
        self,
        model: PressureModel,
        classes: dict[str, str],
        notes: dict[str, str],
        moves: list[Move],
        idle: tuple[str, str] | None,
    ) -> PolicyOutcome:
        low, high = self.params.low, self.params.high
        nodes = tuple(
            NodeExplanation(name, classes[name], float(model.s_obs[i]), low, high, notes.get(name, ""))
            for i, name in enumerate(model.names)
        )
        code, reason = idle if idle else (None, None)
        return PolicyOutcome(tuple(moves), nodes, classes, code, reason)


class _TargetIndex:
    """Per-cycle lookups that make a VM's allowed-target mask a few array operations."""

    def __init__(self, view: ClusterView) -> None:
        self._population = view.population
        groups: dict[tuple[Taint, ...], list[int]] = {}
        for i, node in enumerate(view.population):
            hard = tuple(t for t in node.taints if t.effect in HARD_EFFECTS)
            if hard:
                groups.setdefault(hard, []).append(i)
        self.hard_taint_groups = {taints: np.array(members) for taints, members in groups.items()}
        self._labels: dict[str, np.ndarray] = {}

    def labels(self, key: str) -> np.ndarray:
        if key not in self._labels:
            self._labels[key] = np.array([node.labels.get(key) for node in self._population], dtype=object)
        return self._labels[key]


def _last_moves(view: ClusterView) -> tuple[dict[str, float], dict[str, float]]:
    """When each node last saw a successful migration out of it and into it end."""
    last_out: dict[str, float] = {}
    last_in: dict[str, float] = {}
    for vm in [vm for vm in view.snapshot.vms if vm.history]:
        for past in vm.history:
            if not past.succeeded:
                continue
            last_out[past.source] = max(last_out.get(past.source, -np.inf), past.ended)
            last_in[past.target] = max(last_in.get(past.target, -np.inf), past.ended)
    return last_out, last_in


def _category(signal: float, schedulable: bool, low: float, high: float) -> str:
    if signal > high:
        return OVER
    return UNDER if signal <= low and schedulable else APPROPRIATE


def _why_none(problem: Problem, i: int, allowance: int, total: int) -> str:
    if allowance == 0 or total == 0:
        return "no budget left (limits count in-flight migrations)"
    if not problem.candidates.get(i):
        return "no movable VM (see refusals)"
    return "no target can take its VMs and stay under targetThreshold"
