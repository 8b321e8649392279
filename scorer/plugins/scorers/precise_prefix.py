"""precise-prefix-cache-scorer: prefer the endpoints that really hold this prompt's prefix, as their KV events say.

Formula, for a candidate e whose event stream is synced (`scorer.sources.kv_events`):

    tokens     = the prompt as the servers tokenize it: their own /tokenize (completion form for a text prompt, chat
                 form with the request's template fields for a chat; `scorer.sources.tokenize`, cached), or the
                 request's own ids for a completion whose prompt is token ids
    keys       = chained keys of its full blocks of e's block size (`scorer.precise_index.request_keys`)
    score(e)   = matched_blocks(e) / len(keys)

where `matched_blocks(e)` is the longest run of keys, from block 0, that e holds according to the precise index.

When the request's own tokens are not cached but it extends a prompt that is (the next turn of a conversation, same
model and kind; `scorer.token_prefix`), its tokens are *derived*: the earlier prompt's tokens without their last
`derivedPrefixMarginTokens`, a true prefix of the request's tokens. Then `keys` are those of that known prefix and
the denominators are estimates of the whole request (the earlier prompt's tokens per byte times the request's
length): `score(e) = matched_blocks(e) / max(len(keys), estimated_tokens // block_size)`, and the cached share of
the prompt that ttft-estimate-scorer reads is `matched_blocks(e) * block_size / estimated_tokens`. The shell then
does not wait for `/tokenize` (it asks in the background, for the next turn).
For a candidate without synced events, or a request whose tokens are not known (a failed /tokenize, a completions
batch of several prompts, a chat with image or audio parts), the score is the approximate prefix-cache-scorer's
(this plugin *is* one: it keeps the approximate index learning from what it sends, and the ttft-estimate-scorer
reads either kind through `match`). A prompt shorter than one block scores 0 everywhere.

A request whose model is a LoRA adapter seen in the events (`lora_name`) is keyed with that adapter, as the server
keys its blocks.

Inputs: a `PreciseState` (the precise index and the token cache) that the plugin is built with, from its factory's
`PluginRuntime` (`build_precise_prefix`). The process (`scorer.service`) feeds those very objects: one KV-event
subscription per endpoint at `port + kvEventsPortOffset` (replay at `port + kvReplayPortOffset`), following the pool's
membership (`membership_listeners`), and a tokenize step before each decision (`scorer.sources.precise_inputs`).

Parameters: those of prefix-cache-scorer (for the fallback), plus `maxBlocksPerEndpoint` (262144: bound of the
precise index per endpoint, above any real `num_gpu_blocks`), `maxPrefixTokens` (131072, Llama-3.1's context),
`tokenCacheEntries` (1024) and `tokenCacheTokens` (16777216 = 64 MiB: tokens, plus the prompts' text kept for
derivation at 4 bytes a unit), `tokenizeTimeoutSeconds` (0.5: the longest wait for `/tokenize` when nothing can be
derived; 0: never wait, always ask in the background), `derivedPrefixMarginTokens` (64; null: never derive, wait as
before), `backgroundTokenizeConcurrency` (8: background `/tokenize` calls in flight at most, 8 times as many queued),
`kvEventsPortOffset` (1000), `kvReplayPortOffset` (2000; null: no replay, gaps clear the endpoint), `kvTopic` ("").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field

from scorer.plugins.scorers.prefix_cache import PrefixCacheParams, PrefixCacheScorer, PrefixMatch
from scorer.precise_index import PreciseIndex, request_keys
from scorer.registry import PluginRuntime
from scorer.token_cache import TokenCache, TokenSource, known_prefix
from scorer.token_prefix import DEFAULT_MARGIN_TOKENS
from scorer.types import CycleState, EndpointState, LLMRequest


class PrecisePrefixParams(PrefixCacheParams):
    max_blocks_per_endpoint: int = Field(262_144, ge=1)
    max_prefix_tokens: int = Field(131_072, ge=1)
    token_cache_entries: int = Field(1024, ge=1)
    token_cache_tokens: int = Field(16 * 1024 * 1024, ge=1)
    tokenize_timeout_seconds: float = Field(0.5, ge=0, le=60, allow_inf_nan=False)
    derived_prefix_margin_tokens: int | None = Field(DEFAULT_MARGIN_TOKENS, ge=1, le=65_536)
    background_tokenize_concurrency: int = Field(8, ge=1, le=1024)
    kv_events_port_offset: int = Field(1000, ge=-65535, le=65535)
    kv_replay_port_offset: int | None = Field(2000, ge=-65535, le=65535)
    kv_topic: str = ""


@dataclass(frozen=True)
class PreciseMatch(PrefixMatch):
    """A prefix match where synced endpoints are judged by the precise index, the others approximately."""

    exact_blocks: dict[str, float] = field(default_factory=dict)  # address -> matched / total blocks
    exact_tokens: dict[str, float] = field(default_factory=dict)  # address -> cached share of the prompt tokens
    prompt_tokens: int | None = None  # token count: exact when tokenized, estimated when derived
    token_source: TokenSource | None = None  # None: tokens unknown, approximate everywhere

    def block_fraction(self, address: str) -> float:
        exact = self.exact_blocks.get(address)
        return exact if exact is not None else super().block_fraction(address)

    def cached_fraction(self, address: str) -> float:
        exact = self.exact_tokens.get(address)
        return exact if exact is not None else super().cached_fraction(address)


@dataclass(frozen=True)
class PreciseState:
    """What the plugin reads and the process fills: the index of the endpoints' KV events, the `/tokenize` answers,
    and who follows the plugin's membership changes (the KV-event source)."""

    index: PreciseIndex
    tokens: TokenCache
    membership_listeners: list[Callable[[frozenset[str]], None]] = field(default_factory=list)

    @classmethod
    def empty(cls, params: PrecisePrefixParams) -> PreciseState:
        """Nothing known yet, sized by the plugin's parameters."""
        return cls(
            PreciseIndex(params.max_blocks_per_endpoint),
            TokenCache(
                params.token_cache_entries,
                params.token_cache_tokens,
                keep_prefixes=params.derived_prefix_margin_tokens is not None,
            ),
        )


class PrecisePrefixCacheScorer(PrefixCacheScorer):
    type_name: ClassVar[str] = "precise-prefix-cache-scorer"
    Params = PrecisePrefixParams  # type: ignore[assignment]  # extends the parent's parameters

    def __init__(self, name: str, params: PrecisePrefixParams, state: PreciseState):
        super().__init__(name, params)
        self.precise_params = params
        self.state = state
        self.precise = state.index
        self.tokens = state.tokens
        self.precise_requests = 0  # requests matched against the precise index (tokens known or derived)
        self.by_source: dict[str, int] = {"exact": 0, "derived": 0, "none": 0}  # matches by where tokens came from

    def match(self, cycle: CycleState, request: LLMRequest) -> PrefixMatch:
        found = cycle.data.get(self._key)
        if isinstance(found, PreciseMatch):
            return found
        approx = super().match(cycle, request)
        result = PreciseMatch(approx.hashes, approx.matched, approx.prompt_bytes, approx.block_size)
        known = known_prefix(request, self.tokens, self.precise_params.derived_prefix_margin_tokens)
        if known is not None:
            result = self._precise(request, *known, approx)
        source = known[0] if known is not None else "none"
        self.by_source[source] += 1
        cycle.notes[f"{self.name}.tokens"] = source  # Explain says where this request's tokens came from
        cycle.data[self._key] = result
        return result

    def _precise(
        self, request: LLMRequest, source: TokenSource, tokens: Sequence[int], n_tokens: int, approx: PrefixMatch
    ) -> PreciseMatch:
        """Matched against the index: `tokens` are the request's (exact) or a true prefix of them (derived), and
        `n_tokens` their count, exact or estimated."""
        index = self.precise
        synced = [a for a in index.addresses() if index.synced(a)]
        lora = request.model if request.model in index.lora_names else None
        exact_blocks: dict[str, float] = {}
        exact_tokens: dict[str, float] = {}
        by_size: dict[int, list[str]] = {}
        for address in synced:
            size = index.block_size(address)
            if size is None:  # synced but nothing stored yet: it holds nothing
                exact_blocks[address] = exact_tokens[address] = 0.0
            else:
                by_size.setdefault(size, []).append(address)
        for size, addresses in by_size.items():
            limit = self.precise_params.max_prefix_tokens // size
            keys = request_keys(tokens, size, lora, limit)
            total = max(len(keys), min(n_tokens // size, limit))  # the same as len(keys) when exact
            matched = index.match(keys) if keys else {}
            for address in addresses:
                blocks = matched.get(address, 0)
                exact_blocks[address] = blocks / total if total else 0.0
                exact_tokens[address] = min(1.0, blocks * size / n_tokens) if n_tokens else 0.0
        self.precise_requests += 1
        return PreciseMatch(
            approx.hashes,
            approx.matched,
            approx.prompt_bytes,
            approx.block_size,
            exact_blocks=exact_blocks,
            exact_tokens=exact_tokens,
            prompt_tokens=n_tokens,
            token_source=source,
        )

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        match = self.match(cycle, request)
        return {c.address: match.block_fraction(c.address) for c in candidates}

    def endpoints_changed(self, present: frozenset[str]) -> None:
        super().endpoints_changed(present)
        self.precise.retain(present)
        for listener in self.state.membership_listeners:
            listener(present)


def build_precise_prefix(name: str, params: PrecisePrefixParams, runtime: PluginRuntime) -> PrecisePrefixCacheScorer:
    """The registry's factory: the plugin's state is the one the runtime was given for `name`, else a new empty one
    that the runtime keeps for the process to feed."""
    state = runtime.provide(name, PreciseState, lambda: PreciseState.empty(params))
    return PrecisePrefixCacheScorer(name, params, state)
