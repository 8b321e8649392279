"""ttft-estimate-scorer: load-aware prefix affinity, by estimating each replica's time to first token for THIS request.

Why: prefix affinity and load pull in opposite directions, and adding a prefix score to a queue score with fixed
weights trades them at an arbitrary exchange rate. Expressing both in seconds makes the trade exact: a long shared
prefix wins until that replica's queue costs more than re-computing the prefix elsewhere.

Estimate for candidate e (seconds):

    uncached(e) = prompt_tokens * (1 - cached_fraction(e))          # from the prefix index (prefix-cache-scorer,
                                                                     # or the precise one: its real cache contents)
    slowdown(e) = 1 + runningRequestSlowdown * running(e)            # decodes share every engine step
    queue(e)    = max(backlog(e), scraped_queue(e))
    ttft(e)     = decodeStepSeconds + queue(e) + uncached(e) * slowdown(e) / prefillTokensPerSecond

- `backlog(e)`: prefill work this picker sent to e that is not done yet, as a virtual queue: each dispatch extends
  `backlog_until(e) = max(now, backlog_until(e)) + uncached * slowdown / rate`, and it drains with the clock, so it
  needs no completion event and counts requests the next scrape has not seen yet;
- `scraped_queue(e) = (waiting(e) + sent since that scrape) * mean_uncached * slowdown(e) / rate`: covers traffic
  from elsewhere and replicas slower than `prefillTokensPerSecond`; `mean_uncached` is a moving average of the
  uncached tokens of recent dispatches (starting at `waitingRequestTokens`).

Active-active replicas: each dispatch is shared with the peer replicas as `[prefill microseconds, uncached tokens]`
(`routing_blocks`), which extend their `backlog_until` and `mean_uncached` as their own dispatches do, so every
replica's virtual queue holds every replica's prefill work (scorer/replica_sync.py).

Score: `min_e ttft(e) / ttft(e)`, in (0, 1]: 1 for the fastest candidate, 0.5 for one twice as slow.
The estimates are left in the cycle state (`<name>/estimates`) for Explain.

Parameters: `prefillTokensPerSecond` (25000: Llama-3.1-8B on one H100 prefills ~30k tokens/s in 8192-token chunks;
a little lower for the attention cost of long contexts), `decodeStepSeconds` (0.02: the floor of any TTFT, one
engine step), `runningRequestSlowdown` (0.002: 100 decoding requests of ~10k context make a step ~20% longer),
`waitingRequestTokens` (1024), `prefixPluginRef` (the prefix-cache-scorer to read; default: the only one configured,
none means no request is predicted to hit the cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

from pydantic import Field

from scorer.framework import Plugin, PluginParams
from scorer.plugins.common import metrics_of, queue_length
from scorer.plugins.scorers.prefix_cache import PrefixCacheScorer
from scorer.types import CycleState, EndpointState, LLMRequest, SchedulingResult

_EWMA_ALPHA = 0.05
_PREFIX_TYPES = ("prefix-cache-scorer", "precise-prefix-cache-scorer")  # the precise one subclasses the other


class TTFTEstimate(NamedTuple):
    seconds: float  # estimated time to first token on this endpoint
    uncached_tokens: float  # prompt tokens it would have to prefill
    slowdown: float  # prefill slowdown from its running batch


class TTFTEstimateParams(PluginParams):
    prefill_tokens_per_second: float = Field(25_000.0, gt=0, allow_inf_nan=False)
    decode_step_seconds: float = Field(0.02, gt=0, allow_inf_nan=False)
    running_request_slowdown: float = Field(0.002, ge=0, allow_inf_nan=False)
    waiting_request_tokens: int = Field(1024, ge=0)
    locality_credit: float = Field(0.0, ge=0, le=100, allow_inf_nan=False)
    prefix_plugin_ref: str | None = None


class TTFTEstimateScorer:
    type_name: ClassVar[str] = "ttft-estimate-scorer"
    Params = TTFTEstimateParams

    def __init__(self, name: str, params: TTFTEstimateParams):
        self.name = name
        self.params = params
        self.prefix: PrefixCacheScorer | None = None
        self.backlog_until: dict[str, float] = {}
        self._shared_key = f"{name}/dispatch"
        self.mean_uncached = float(params.waiting_request_tokens)
        self._key = f"{name}/estimates"

    @classmethod
    def check_references(
        cls, params: TTFTEstimateParams, plugins: Mapping[str, str], profiles: Sequence[str]
    ) -> list[tuple[str, str]]:
        prefix_plugins = [name for name, kind in plugins.items() if kind in _PREFIX_TYPES]
        ref = params.prefix_plugin_ref
        if ref is None:
            if len(prefix_plugins) > 1:
                return [("prefixPluginRef", f"required: several prefix-cache-scorers {sorted(prefix_plugins)}")]
            return []
        if plugins.get(ref) not in _PREFIX_TYPES:
            return [("prefixPluginRef", f"{ref!r} is not a prefix-cache-scorer plugin (or a precise one)")]
        return []

    def bind(self, plugins: Mapping[str, Plugin]) -> None:
        ref = self.params.prefix_plugin_ref
        found = [p for n, p in plugins.items() if isinstance(p, PrefixCacheScorer) and ref in (None, n)]
        self.prefix = found[0] if len(found) == 1 else None

    def estimates(
        self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]
    ) -> dict[str, TTFTEstimate]:
        """Per candidate address, its estimate for this request, computed once per cycle."""
        cached: dict[str, TTFTEstimate] = cycle.data.setdefault(self._key, {})
        missing = [c for c in candidates if c.address not in cached]
        if not missing:
            return cached
        p = self.params
        match = self.prefix.match(cycle, request) if self.prefix is not None else None
        prompt_tokens = request.estimated_prompt_tokens()
        per_token = 1.0 / p.prefill_tokens_per_second
        queued_cost = self.mean_uncached * per_token
        backlog_until, now, step, k = self.backlog_until, cycle.now, p.decode_step_seconds, p.running_request_slowdown
        for c in missing:
            address = c.address
            slowdown = 1.0 + k * metrics_of(c).running
            held = match.cached_fraction(address) if match is not None else 0.0
            uncached = max(0.0, prompt_tokens * (1.0 - held))
            backlog = backlog_until.get(address, 0.0) - now
            scraped = queue_length(c, True) * queued_cost * slowdown
            ttft = step + max(backlog, scraped, 0.0) + uncached * slowdown * per_token
            cached[address] = TTFTEstimate(ttft, uncached, slowdown)
        return cached

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        estimates = self.estimates(cycle, request, candidates)
        ttfts = {c.address: estimates[c.address].seconds for c in candidates}
        if not ttfts:
            return {}
        credit = self.params.locality_credit
        if credit > 0:  # the prefill a cached prefix will also save the conversation's next turns, here
            per_token, floor = 1.0 / self.params.prefill_tokens_per_second, self.params.decode_step_seconds
            prompt = request.estimated_prompt_tokens()
            for address, e in estimates.items():
                if address in ttfts:
                    saved = max(0.0, prompt - e.uncached_tokens) * e.slowdown * per_token
                    ttfts[address] = max(floor, ttfts[address] - credit * saved)
        best = min(ttfts.values())
        return {address: best / ttft for address, ttft in ttfts.items()}

    def pre_request(self, cycle: CycleState, request: LLMRequest, result: SchedulingResult) -> None:
        if not result.targets:
            return
        primary = result.targets[0]
        estimate = self.estimates(cycle, request, [primary])[primary.address]
        start = max(cycle.now, self.backlog_until.get(primary.address, 0.0))
        prefill_s = estimate.uncached_tokens * estimate.slowdown / self.params.prefill_tokens_per_second
        self.backlog_until[primary.address] = start + prefill_s
        self.mean_uncached += _EWMA_ALPHA * (estimate.uncached_tokens - self.mean_uncached)
        cycle.data[self._shared_key] = (round(prefill_s * 1e6), max(0, round(estimate.uncached_tokens)))

    def routing_blocks(self, cycle: CycleState, request: LLMRequest) -> list[int] | None:
        """This cycle's dispatch for peer replicas: [prefill microseconds added to the backlog, uncached tokens]."""
        shared = cycle.data.get(self._shared_key)
        return list(shared) if isinstance(shared, tuple) else None

    def learn_peer_routing(self, address: str, blocks: Sequence[int], now: float) -> None:
        if len(blocks) != 2:
            return
        prefill_us, uncached = blocks
        self.backlog_until[address] = max(now, self.backlog_until.get(address, 0.0)) + prefill_us / 1e6
        self.mean_uncached += _EWMA_ALPHA * (uncached - self.mean_uncached)

    def endpoints_changed(self, present: frozenset[str]) -> None:
        self.backlog_until = {a: t for a, t in self.backlog_until.items() if a in present}
