"""sglang-router's cache_aware policy, re-expressed for the model-time routing simulation.

Why it exists: sglang-router 0.3.2 (and smg, its successor) keeps the most prefix-cache hits of the peers on the
Mooncake trace, and the real router can only be run through Envoy in real time (a few minutes a run, noisy on a
shared machine). To learn *why* it keeps more hits, and to tune our profile against it on many loads, the policy is
written here from its documented rules and run in `loadtests.routing.in_process` on the same engine twins as our
Director. Checked against the real router (BENCHMARKS.md): on the trace's first 5 minutes at 2.5x it keeps 0.152
of the prompt tokens against the real router's 0.140-0.158 through Envoy.

The rules (sglang-router `--policy cache_aware`, flags at their defaults):

- the router keeps, per worker, an approximate tree of the text it sent there (here: the picker's own chained hashes
  of 64-byte blocks, `scorer.hashing`; the tree's granularity is a character, the difference is under one block per
  request);
- if the router's own in-flight counts are imbalanced (`max - min > balance_abs_threshold` (64) and
  `max > min * balance_rel_threshold` (1.5)), the least loaded worker gets the request;
- otherwise the worker with the longest matched prefix gets it when the match covers more than `cache_threshold`
  (0.3) of the prompt, else the worker whose tree is smallest;
- the prompt is inserted into the chosen worker's tree; trees larger than `max_tree_size` (2**26 characters) are
  trimmed least recently used every `eviction_interval_s` (60 s), leaves first (a prompt's tail before its
  shared beginning).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scorer.director import Director
from scorer.framework import Usage
from scorer.hashing import prompt_block_hashes
from scorer.types import Endpoint, EndpointMetrics, EndpointState, LLMRequest, NoEndpointError, SchedulingResult

BLOCK_CHARS = 64


@dataclass(frozen=True)
class CacheAwareSettings:
    """sglang-router's flags, at its defaults."""

    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    max_tree_size: int = 2**26
    eviction_interval_s: float = 60.0


def block_chain(text: str) -> list[int]:
    """Chained hashes of the text's full 64-byte blocks: block i stands for its first 64 * (i + 1) bytes."""
    return prompt_block_hashes("", text, BLOCK_CHARS, len(text))


class CacheAwareRouter:
    """The policy as a `loadtests.routing.in_process.Front`: `CacheAwareRouter(clock)` decides, in model time."""

    def __init__(self, clock: Callable[[], float], settings: CacheAwareSettings | None = None):
        self.clock = clock
        self.settings = settings or CacheAwareSettings()
        self.endpoints: list[Endpoint] = []
        self.trees: dict[str, OrderedDict[int, None]] = {}  # address -> its blocks, least recently used first
        self.load: dict[str, int] = {}
        self.sent: dict[str, str] = {}  # request id -> address, until its response ends
        self.next_eviction = self.settings.eviction_interval_s

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = list(endpoints)
        for e in self.endpoints:
            self.trees.setdefault(e.address, OrderedDict())
            self.load.setdefault(e.address, 0)

    def update_metrics(self, address: str, metrics: EndpointMetrics | None, error: str | None = None) -> None:
        """The policy decides from its own counts and trees; it reads no server metrics."""

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        candidates = [e for e in self.endpoints if subset is None or e.address in subset]
        if not candidates:
            raise NoEndpointError("no endpoints")
        self._evict(self.clock())
        chain = block_chain(request.prompt)
        chosen, reason = self._choose(candidates, chain, len(request.prompt))
        self.record(chosen.address, request.request_id, chain)
        return SchedulingResult((EndpointState(chosen),), reason)

    def record(self, address: str, request_id: str, chain: list[int]) -> None:
        """The prompt `chain` was sent to `address`: into its tree, and counted in flight until its end."""
        tree = self.trees[address]
        for key in reversed(chain):  # the prompt's first block ends most recent: trimming takes tails first
            tree[key] = None
            tree.move_to_end(key)
        self.load[address] += 1
        self.sent[request_id] = address

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        address = self.sent.pop(request_id, None)
        if address is not None:
            self.load[address] -= 1

    def _choose(self, candidates: list[Endpoint], chain: list[int], prompt_chars: int) -> tuple[Endpoint, str]:
        s = self.settings
        loads = [self.load[e.address] for e in candidates]
        low, high = min(loads), max(loads)
        if high - low > s.balance_abs_threshold and high > low * s.balance_rel_threshold:
            return candidates[loads.index(low)], "imbalanced: least loaded"
        holder = self.holder(candidates, chain, prompt_chars)
        if holder is not None:
            return holder, "longest prefix"
        return self.smallest_tree(candidates), "smallest tree"

    def holder(self, candidates: Sequence[Endpoint], chain: list[int], prompt_chars: int) -> Endpoint | None:
        """The worker with the longest matched prefix when it covers more than `cache_threshold` of the prompt."""
        matched = [self._matched_blocks(e.address, chain) for e in candidates]
        best = max(matched, default=0)
        if best and best * BLOCK_CHARS / max(1, prompt_chars) > self.settings.cache_threshold:
            return candidates[matched.index(best)]
        return None

    def smallest_tree(self, candidates: Sequence[Endpoint]) -> Endpoint:
        sizes = [len(self.trees[e.address]) for e in candidates]
        return candidates[sizes.index(min(sizes))]

    def _matched_blocks(self, address: str, chain: list[int]) -> int:
        tree = self.trees[address]
        for n, key in enumerate(chain):
            if key not in tree:
                return n
        return len(chain)

    def _evict(self, now: float) -> None:
        if now < self.next_eviction:
            return
        self.next_eviction = now + self.settings.eviction_interval_s
        limit = self.settings.max_tree_size // BLOCK_CHARS
        for tree in self.trees.values():
            while len(tree) > limit:
                tree.popitem(last=False)


class HalfCacheAware:
    """Our Director with one half of the policy's rule in its place, to learn which half keeps the hits.

    The rule has two halves: a prompt whose longest match in the trees covers more than `cache_threshold` goes to
    that worker ("sticky"), any other to the smallest tree ("cold"). `halves` names the ones taken from the policy
    (its trees remember what was sent, as the real router's do); the Director decides the rest, and it is told every
    decision (a forced one through `pick(subset=[worker])`), so its own index, in-flight counts and estimates follow.
    With both halves it places every request as `CacheAwareRouter` does; with none it is the Director alone.
    """

    def __init__(self, director: Director, halves: frozenset[str], settings: CacheAwareSettings | None = None):
        if not halves <= {"sticky", "cold"}:
            raise ValueError(f"halves must be among sticky, cold: {sorted(halves)}")
        self.director = director
        self.halves = halves
        self.trees = CacheAwareRouter(director.clock, settings)  # its trees and in-flight counts only

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        self.trees.set_endpoints(endpoints)
        self.director.set_endpoints(endpoints)

    def update_metrics(self, address: str, metrics: EndpointMetrics | None, error: str | None = None) -> None:
        self.director.update_metrics(address, metrics, error)

    def pick(self, request: LLMRequest, subset: Sequence[str] | None = None) -> SchedulingResult:
        t = self.trees
        t._evict(t.clock())
        candidates = [e for e in t.endpoints if subset is None or e.address in subset]
        chain = block_chain(request.prompt)
        holder = t.holder(candidates, chain, len(request.prompt))
        forced: Endpoint | None = None
        if holder is not None and "sticky" in self.halves:
            forced = holder
        elif holder is None and "cold" in self.halves and candidates:
            forced = t.smallest_tree(candidates)
        result = self.director.pick(request, [forced.address] if forced else subset)
        t.record(result.addresses[0], request.request_id, chain)
        return result

    def response_complete(self, request_id: str, served: str | None, status: int, usage: Usage | None) -> None:
        self.trees.response_complete(request_id, served, status, usage)
        self.director.response_complete(request_id, served, status, usage)
