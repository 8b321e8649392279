"""prefix-cache-scorer: prefer the endpoints that probably hold this prompt's prefix in their KV cache.

Formula: `score(e) = matched_blocks(e) / total_blocks`, where the prompt is cut into `blockSize`-byte blocks with
chained xxh64 hashes (`scorer.hashing`) and `matched_blocks(e)` is the longest run of them, from block 0, that the
index believes `e` holds (`scorer.prefix_index`). A prompt shorter than one block scores 0 everywhere (neutral).

Learning: `pre_request` records the request's block hashes against the primary target (what the picker sent where).
When the response says a different endpoint served it (Envoy retried down the fallback list), the response hook
records them against the served endpoint too, from a copy of the hashes kept until the response ends (8 bytes a
block, an eighth of the prompt; at most 64 MiB of them, oldest forgotten first), since the in-flight table keeps
requests without their prompts. An endpoint that leaves the pool is forgotten. With several picker
replicas (active-active), each replica also records the blocks its peers routed (`learn_peer_routing`, fed by
scorer/replica_sync.py), so every replica's index holds what the whole pool of pickers sent where.

Sharing: `match(cycle, request)` hashes the prompt and matches it once per cycle and keeps the result in the cycle
state, so the ttft-estimate-scorer reads the same numbers without hashing again. Hashing goes through a
`BlockHashMemo`: the part of a prompt it shares with a recent prompt is compared, not hashed again.

Sizing: each endpoint's LRU holds what its KV cache holds, in prompt bytes (`scorer/index_sizing.py`): its
`vllm:cache_config_info` tokens times a bytes-per-token rate learned from the servers' `vllm:prompt_tokens_total`
against the prompt bytes routed to them (`metrics_updated`, on every scrape; `pre_request` and `learn_peer_routing`
count the bytes).

Parameters: `blockSize` (64 bytes ~ 16 tokens, vLLM's block), `maxPrefixBlocks` (8192 = 512 KiB ~ 128k tokens,
Llama-3.1's context, so no legal prompt is cut), `lruCapacityPerServer` (31250 blocks ~ 2 M characters ~ 500k tokens
at 4 bytes per token: the size of an endpoint that reports no KV size, or of every endpoint with
`capacityFromMetrics: false`), `capacityFromMetrics` (true), `bytesPerToken` (`auto`: learned, 4 until 500k tokens
were counted; or a fixed number in [1, 32]), `maxIndexBytes` (512Mi: the
memory budget of the whole index over all endpoints, counted at `scorer.prefix_index.ENTRY_BYTES` per
(endpoint, block) entry; over it the endpoints holding the most give up their oldest blocks; null: no budget, only
the per-endpoint capacity), `learnFromResponses` (true).

The default budget holds 1.34 M entries: 43 endpoints with full LRUs, or 100 at 13,400 blocks (~210k tokens) each;
measured, the index then adds ~280 MB to the process, and at most 512Mi, under the picker's 2Gi memory limit
(deploy/base/picker).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from scorer.block_hash_memo import BlockHashMemo
from scorer.byte_size import ByteSize
from scorer.framework import PluginParams, Usage
from scorer.index_sizing import MAX_BYTES_PER_TOKEN, MIN_BYTES_PER_TOKEN, BytesPerToken, capacity_blocks
from scorer.prefix_index import ENTRY_BYTES, PrefixIndex
from scorer.types import CycleState, EndpointMetrics, EndpointState, IndexSnapshot, LLMRequest, SchedulingResult

_PENDING_LIMIT = 65_536  # requests remembered between pick and response (oldest forgotten first)
_BLOCK_BYTES = 8  # a block hash kept in an array("Q")
_PENDING_BYTES = 64 * 2**20  # ...and their block hashes, 8 bytes a block: 8 M blocks, ~512 MB of prompts in flight
_INITIAL_BYTES_PER_TOKEN = 4.0  # GIE's guess for English text, until the counters say otherwise
_RESIZE_AT = 0.02  # re-size every endpoint when the bytes-per-token estimate moved by more than this fraction
BytesPerTokenParam = Annotated[float, Field(ge=MIN_BYTES_PER_TOKEN, le=MAX_BYTES_PER_TOKEN, allow_inf_nan=False)]


class PrefixCacheParams(PluginParams):
    block_size: int = Field(64, ge=1)
    max_prefix_blocks: int = Field(8192, ge=1)
    lru_capacity_per_server: int = Field(31_250, ge=1)
    max_index_bytes: ByteSize | None = Field(512 * 2**20, ge=ENTRY_BYTES)
    learn_from_responses: bool = True
    capacity_from_metrics: bool = True
    bytes_per_token: BytesPerTokenParam | Literal["auto"] = "auto"


@dataclass(frozen=True)
class PrefixMatch:
    """One prompt against the index: its block hashes and, per endpoint, how many leading blocks it holds."""

    hashes: list[int]
    matched: dict[str, int]
    prompt_bytes: int
    block_size: int

    def block_fraction(self, address: str) -> float:
        """Matched blocks over hashed blocks: the prefix-cache score."""
        return self.matched.get(address, 0) / len(self.hashes) if self.hashes else 0.0

    def cached_fraction(self, address: str) -> float:
        """The share of the whole prompt (partial tail and unhashed bytes included) predicted to be cached."""
        if not self.prompt_bytes:
            return 0.0
        return min(1.0, self.matched.get(address, 0) * self.block_size / self.prompt_bytes)


class PrefixCacheScorer:
    type_name: ClassVar[str] = "prefix-cache-scorer"
    Params = PrefixCacheParams

    def __init__(self, name: str, params: PrefixCacheParams):
        self.name = name
        self.params = params
        budget = params.max_index_bytes
        self.index = PrefixIndex(params.lru_capacity_per_server, None if budget is None else budget // ENTRY_BYTES)
        self.memo = BlockHashMemo(params.block_size, params.max_prefix_blocks)
        # request id -> the address its blocks were recorded for, and the blocks (8 bytes each): the in-flight
        # table keeps requests without their prompts, so a response served elsewhere is learnt from these
        self._sent: OrderedDict[str, tuple[str, array[int]]] = OrderedDict()
        self._sent_bytes = 0
        self.sent_budget = (_PENDING_LIMIT, _PENDING_BYTES)  # (requests, bytes of blocks) kept at most
        self._key = f"{name}/match"
        # peers exchange this index under a key naming its block size: hashes of other blocks never match
        self.share_key = f"{name}@{params.block_size}B"
        fixed = params.bytes_per_token
        self.bytes_per_token = BytesPerToken(_INITIAL_BYTES_PER_TOKEN if fixed == "auto" else fixed)
        self._learn_bytes_per_token = fixed == "auto"
        self._kv_tokens: dict[str, int] = {}  # address -> the KV tokens its cache_config_info reports
        self._sized_with = self.bytes_per_token.value()  # the estimate the capacities were computed with
        self.index.bytes_per_token = self._sized_with

    def match(self, cycle: CycleState, request: LLMRequest) -> PrefixMatch:
        """This request's match, computed once per cycle (before any learning from this cycle's decision)."""
        found = cycle.data.get(self._key)
        if isinstance(found, PrefixMatch):
            return found
        data = request.prompt.encode()
        hashes = self.memo.hashes(request.model, data)
        result = PrefixMatch(hashes, self.index.match(hashes), len(data), self.params.block_size)
        cycle.data[self._key] = result
        return result

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        match = self.match(cycle, request)
        if not match.hashes:
            return {c.address: 0.0 for c in candidates}
        matched, total = match.matched, len(match.hashes)
        return {c.address: matched.get(c.address, 0) / total for c in candidates}

    def pre_request(self, cycle: CycleState, request: LLMRequest, result: SchedulingResult) -> None:
        if not result.targets:
            return
        match = self.match(cycle, request)
        primary = result.targets[0].address
        self.index.record(primary, match.hashes)
        if self._learn_bytes_per_token:
            self.bytes_per_token.routed(primary, match.prompt_bytes)
        if self.params.learn_from_responses and match.hashes:
            self._remember(request.request_id, primary, match.hashes)

    def routing_blocks(self, cycle: CycleState, request: LLMRequest) -> list[int] | None:
        """The block hashes this cycle's decision recorded (for peer replicas); None for a prompt under one block."""
        found = cycle.data.get(self._key)
        return found.hashes if isinstance(found, PrefixMatch) and found.hashes else None

    def learn_peer_routing(self, address: str, blocks: Sequence[int], now: float) -> None:
        self.index.record(address, blocks)
        if self._learn_bytes_per_token:  # the peer shared whole blocks: the prompt had half a block more on average
            self.bytes_per_token.routed(address, (len(blocks) + 0.5) * self.params.block_size)

    def snapshot(self) -> IndexSnapshot:
        """Per endpoint, the blocks the index holds, least recently used first, and the bytes per token that sized
        it (when learned): for a replica that starts."""
        learned = self._learn_bytes_per_token and self.bytes_per_token.learned
        return IndexSnapshot(
            {address: self.index.lru(address) for address in self.index.addresses()},
            self.bytes_per_token.value() if learned else None,
        )

    def restore(self, snapshot: IndexSnapshot, present: frozenset[str]) -> int:
        """Take a peer's index for the endpoints in `present`. Its bytes per token first, while this replica has
        not learned its own: sized at the initial guess, the LRUs would cut what the peer's held."""
        peer = snapshot.bytes_per_token
        if peer is not None and self._learn_bytes_per_token and not self.bytes_per_token.learned:
            self.bytes_per_token.initial = min(MAX_BYTES_PER_TOKEN, max(MIN_BYTES_PER_TOKEN, peer))
            self._resize_if_moved()
        taken = 0
        for address, blocks in snapshot.endpoints.items():
            if address in present:
                self.index.restore(address, blocks)
                taken += len(blocks)
        return taken

    def metrics_updated(self, address: str, metrics: EndpointMetrics) -> None:
        """Size the endpoint's index to its KV cache (scorer/index_sizing.py) and learn the bytes per token."""
        if self._learn_bytes_per_token and metrics.prompt_tokens_total is not None:
            self.bytes_per_token.counted(address, metrics.prompt_tokens_total)
        if not self.params.capacity_from_metrics:
            return
        if metrics.num_gpu_blocks is not None and metrics.block_size is not None:
            kv_tokens = metrics.num_gpu_blocks * metrics.block_size
            if self._kv_tokens.get(address) != kv_tokens:
                self._kv_tokens[address] = kv_tokens
                self._size(address, kv_tokens, self._sized_with)
        self._resize_if_moved()

    def _resize_if_moved(self) -> None:
        """Re-size every endpoint when the bytes-per-token estimate moved by more than `_RESIZE_AT`."""
        estimate = self.bytes_per_token.value()
        if abs(estimate - self._sized_with) > _RESIZE_AT * self._sized_with:
            self._sized_with = self.index.bytes_per_token = estimate
            for known, kv_tokens in self._kv_tokens.items():
                self._size(known, kv_tokens, estimate)

    def _size(self, address: str, kv_tokens: int, bytes_per_token: float) -> None:
        self.index.set_capacity(address, capacity_blocks(kv_tokens, bytes_per_token, self.params.block_size))

    def response_complete(
        self, request: LLMRequest, address: str, status: int, usage: Usage | None, now: float
    ) -> None:
        sent = self._forget(request.request_id)
        if sent is None:
            return
        recorded, blocks = sent
        if recorded != address and status < 400:
            self.index.record(address, blocks)

    def _remember(self, request_id: str, address: str, hashes: Sequence[int]) -> None:
        """Keep where a request's blocks went until its response ends, within `sent_budget` (the oldest forgotten
        first: if its response is served elsewhere, that teaches nothing)."""
        blocks = array("Q", hashes)
        self._forget(request_id)
        self._sent[request_id] = (address, blocks)
        self._sent_bytes += _BLOCK_BYTES * len(blocks)
        requests, size = self.sent_budget
        while self._sent and (len(self._sent) > requests or self._sent_bytes > size):
            self._forget(next(iter(self._sent)))

    def _forget(self, request_id: str) -> tuple[str, array[int]] | None:
        """Stop remembering one request's blocks; what was remembered, if anything."""
        sent = self._sent.pop(request_id, None)
        if sent is not None:
            self._sent_bytes -= _BLOCK_BYTES * len(sent[1])
        return sent

    def endpoints_changed(self, present: frozenset[str]) -> None:
        self.index.retain(present)
        for address in [a for a in self._kv_tokens if a not in present]:
            del self._kv_tokens[address]
        self.bytes_per_token.retain(present)
