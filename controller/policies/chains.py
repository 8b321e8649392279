"""psi-relief's chains and swaps: relieve a hot node that no single move can relieve, by first making room.

Why it exists: on a memory-packed cluster (OpenShift Virtualization clusters are memory-bound) every node's
memory requests sit near its allocatable memory, so no VM of a hot node fits on any node that would stay under
`targetThreshold`, and the single-move search (placement.py) plans nothing while the node stays hot for hours.

A chain for hot node h (a source the single-move search left without any move): move a smaller VM w from a
target t to a third node u that can take it, then move the hot VM v from h to t. A swap is the chain whose third
node is h itself: the cooler w goes t -> h, then v goes h -> t. Both are two migrations, w's first: the second
move carries `after = w` and the shell starts it only once w's migration has succeeded (loop.py), holding it as
in flight meanwhile, so every step is checked here, in this cycle, against one snapshot.

Rules (a live migration holds the VM's requests on its source and its target until it ends):
- v: a candidate of h (budget, cooldown, convergence as any move), its target t allowed by v's nodeSelector,
  taints and return block, eligible as a target (placement rules), t != h;
- w: a VM of t the budget accepts (safety, per-VM cooldown: a VM in cooldown is never used), converging, that
  requests no more memory than v ("smaller") and frees enough: free(t) + req(w) >= req(v), cpu and memory;
- step 1 in flight: free(u) >= req(w); chain: u eligible, allowed for w (return block included), u != t, and u
  predicted <= targetThreshold with w; swap (u = h): w allowed on h and, in each dimension h must shed, w brings
  to h at most half of what v takes off it (h is hot while it briefly holds both);
- step 2: t predicted <= targetThreshold with v and without w;
- budget: both moves admitted together or neither (`MigrationBudget.admit_all`): two moves of the cycle's and
  the in-flight limits, one outbound from t and one from h (a swap: one each way);
- worth it: the relief covered (v's delta, minus what w brings for a swap) * 10 >= the two moves' cost.
Chosen: the lowest 10 * uncovered + cost(w) + cost(v) (+ SWAP_PENALTY for a swap, which loads the hot node for
the length of w's migration), then the fewest GiB moved, then names: fewer and smaller migrations first.

Bounds: the search runs only for sources without any move, the CHAIN_SOURCES most pressured, at most one chain
each, while the budget has room for two moves. Per hot node: its CHAIN_HOT_VMS best candidates, for each the
CHAIN_TARGETS coolest targets, on each the CHAIN_ROOM_VMS smallest VMs that free enough: at most 4 x 8 x 4 = 128
(v, t, w) combinations. A make-room VM's third node is one vector operation over the nodes, done once per VM and
skipped when no open node has that much free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from controller.policies.placement import EPS, UNCOVERED_PENALTY, Candidate

CHAIN_HOT_VMS = 4
CHAIN_TARGETS = 8
CHAIN_ROOM_VMS = 4
CHAIN_SOURCES = 4  # hot nodes searched for a chain per cycle, most pressured first (the others wait their turn)
SWAP_PENALTY = 0.25  # a swap loads the hot node while w migrates: a chain of equal cost is preferred
SWAP_MAX_RETURN = 0.5  # a swap's w brings to the hot node at most this share of what v takes off it


@dataclass
class RoomVm:
    """A VM that could leave a target to make room: what it frees, brings and costs; where it may go is computed
    only for the few that pass the memory tests (`masks`: its allowed targets, and the nodes its nodeSelector,
    taints and return block allow, hot nodes included)."""

    candidate: Candidate  # source = the target t; `allowed` unused (see `allowed`)
    masks: Callable[[], tuple[np.ndarray, np.ndarray]]
    _cached: tuple[np.ndarray, np.ndarray] | None = None

    def _get(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is None:
            self._cached = self.masks()
        return self._cached

    @property
    def allowed(self) -> np.ndarray:
        return self._get()[0]

    @property
    def placeable(self) -> np.ndarray:
        return self._get()[1]


@dataclass(frozen=True)
class Chain:
    hot: Candidate  # v, from h = hot.source
    target: int  # t
    room: RoomVm  # w, from t
    third: int  # u; h itself for a swap
    objective: float
    relief: np.ndarray  # (2,) utilisation taken off h in the end

    @property
    def swap(self) -> bool:
        return self.third == self.hot.source

    @property
    def gib(self) -> float:
        return float(self.hot.request[1] + self.room.candidate.request[1]) / 2**30


@dataclass
class ChainSpace:
    """The cluster after the moves already planned this cycle (updated as chains are added)."""

    alloc: np.ndarray  # (n, 2)
    usage: np.ndarray  # (n, 2) utilisation
    free: np.ndarray  # (n, 2) free requests: cores, bytes
    ceiling: np.ndarray  # (n, 2) targetThreshold ceilings of eligible targets, -1 elsewhere
    predict: Callable[[np.ndarray], np.ndarray]

    def apply(self, c: Candidate, target: int) -> None:
        """Move candidate `c` from its source to `target`."""
        self.usage[c.source] -= c.delta
        self.usage[target] += c.load / self.alloc[target]
        self.free[c.source] += c.request
        self.free[target] -= c.request


def gain(delta: np.ndarray, need: np.ndarray) -> float:
    active = need > EPS
    return float((np.minimum(np.maximum(delta[active], 0.0), need[active]) / need[active]).sum())


def find_chain(
    space: ChainSpace,
    need: np.ndarray,
    hot: list[Candidate],
    rooms: Callable[[int], list[RoomVm]],
    used: set[str],
) -> Chain | None:
    """The best chain or swap relieving `need` on the hot candidates' source, or None (see the module docstring)."""
    n_dims = int((need > EPS).sum())
    ranked = sorted(
        (c for c in hot if c.vm.key not in used and gain(c.delta, need) > 0),
        key=lambda c: (-gain(c.delta, need) / c.cost, c.vm.key),
    )[:CHAIN_HOT_VMS]
    best: Chain | None = None
    open_targets = (space.ceiling >= 0).all(axis=1)
    most_free = space.free[open_targets].max(axis=0) if open_targets.any() else np.zeros(2)
    thirds: dict[str, int | None] = {}  # w -> its third node: the same for every v of this hot node
    for v in ranked:
        h = v.source
        brought = v.load / space.alloc  # (n, 2) what v adds to each node
        candidates = v.allowed & (space.ceiling >= 0).all(axis=1)
        candidates[h] = False
        order = np.flatnonzero(candidates)
        if order.size == 0:
            continue
        cooler = np.argsort(space.predict(space.usage + brought)[order], kind="stable")
        for t in (int(x) for x in order[cooler[:CHAIN_TARGETS]]):
            short = v.request - space.free[t]  # what w must free on t
            fitting = 0
            for w in rooms(t):
                c = w.candidate
                if c.vm.key in used or c.vm.key == v.vm.key or c.request[1] > v.request[1]:
                    continue
                if (c.request < short - EPS).any():
                    continue
                after_t = space.usage[t] - c.delta + brought[t]
                if (after_t > space.ceiling[t] + EPS).any():
                    continue
                fitting += 1
                if c.vm.key not in thirds:
                    thirds[c.vm.key] = _third(space, w, h, most_free)
                options = [(u, v.delta)] if (u := thirds[c.vm.key]) is not None else []
                for u, relief in options + _swap(space, v, w, need > EPS):
                    covered = gain(relief, need)
                    cost = v.cost + c.cost + (SWAP_PENALTY if u == h else 0.0)
                    if covered * UNCOVERED_PENALTY < cost:
                        continue
                    objective = UNCOVERED_PENALTY * (n_dims - covered) + cost
                    chain = Chain(v, t, w, u, objective, relief)
                    if best is None or _key(chain) < _key(best):
                        best = chain
                if fitting >= CHAIN_ROOM_VMS:
                    break
    return best


def _third(space: ChainSpace, w: RoomVm, h: int, most_free: np.ndarray) -> int | None:
    """The coolest third node that takes w (a chain), other than its node and the hot node; None when none does."""
    c = w.candidate
    if (c.request > most_free + EPS).any():  # no open node has that much free: skip the vector work
        return None
    after = space.usage + c.load / space.alloc
    fits = w.allowed & (after <= space.ceiling + EPS).all(axis=1) & (space.free >= c.request - EPS).all(axis=1)
    fits[[c.source, h]] = False
    return int(np.argmin(np.where(fits, space.predict(after), np.inf))) if fits.any() else None


def _swap(space: ChainSpace, v: Candidate, w: RoomVm, active: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The hot node itself as w's destination (a swap), with the relief net of what w brings, if allowed."""
    c, h = w.candidate, v.source
    back = c.load / space.alloc[h]
    cooler = (back[active] <= SWAP_MAX_RETURN * v.delta[active] + EPS).all()  # in the dimensions h must shed
    if cooler and (space.free[h] >= c.request - EPS).all() and w.placeable[h]:
        return [(h, v.delta - back)]
    return []


def _key(chain: Chain) -> tuple[float, float, str, int, str, int]:
    return (
        round(chain.objective, 9),
        round(chain.gib, 6),
        chain.hot.vm.key,
        chain.target,
        chain.room.candidate.vm.key,
        chain.third,
    )
