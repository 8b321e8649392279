"""Reference bounds on a trace's prefix-cache hit ratio, computed from the trace alone (no servers, no router).

Why it exists: a router's hit ratio means little without the ceiling it could reach. Two ceilings:

- the oracle (`sim.fleet.trace.oracle_hit_ratio`): one infinite cache shared by every server, so every prefix
  seen before hits; no finite fleet reaches it;
- the pooled-capacity bound (here): one LRU cache holding the whole fleet's capacity, with prefix semantics. A
  fleet of N servers with C tokens each cannot keep more than N x C tokens cached, and a perfect router would at
  best behave as if those N caches were one; once caches are finite this is the realistic ceiling.

Prefix semantics as vLLM's prefix cache: block k of a request hits iff blocks 0..k of its id chain are all cached
(the first miss ends the match). After a request, all its blocks are cached and touched deepest-first, so a
prefix's root is the most recently used and the deepest blocks are evicted first (vLLM frees a request's blocks in
reverse order). Blocks are the trace's (512 tokens in Mooncake traces); a partial last block counts its own
tokens, as in the oracle. Pure: no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sim.fleet.trace import BLOCK_TOKENS, TraceRequest, block_token_counts, oracle_hit_ratio

__all__ = ["fleet_capacity_blocks", "oracle_hit_ratio", "pooled_capacity_hit_ratio"]


def fleet_capacity_blocks(servers: int, gpu_blocks: int, gpu_block_size: int, block_tokens: int = BLOCK_TOKENS) -> int:
    """How many trace blocks of `block_tokens` the fleet's KV caches hold together (rounded down)."""
    if servers < 1 or gpu_blocks < 1 or gpu_block_size < 1 or block_tokens < 1:
        raise ValueError("servers, gpu_blocks, gpu_block_size and block_tokens must all be >= 1")
    return servers * gpu_blocks * gpu_block_size // block_tokens


def pooled_capacity_hit_ratio(
    requests: Iterable[TraceRequest], capacity_blocks: int, block_tokens: int = BLOCK_TOKENS
) -> float:
    """Fraction of prompt tokens one shared LRU prefix cache of `capacity_blocks` blocks serves from cache.

    With a capacity no trace fills, this equals the oracle bound; with capacity 0, it is 0.
    """
    if capacity_blocks < 0:
        raise ValueError(f"capacity_blocks must be >= 0, got {capacity_blocks}")
    if block_tokens <= 0:
        raise ValueError(f"block_tokens must be > 0, got {block_tokens}")
    nodes: dict[tuple[int, int], int] = {}  # (parent node, hash id) -> node id; node 0 is the empty prefix
    cache: OrderedDict[int, None] = OrderedDict()  # cached node ids, least recently used first
    total = hits = 0
    for req in requests:
        total += req.input_length
        chain: list[int] = []
        parent, matching = 0, True
        for h, n in zip(req.hash_ids, block_token_counts(req, block_tokens), strict=True):
            if n == 0:
                break
            node = nodes.setdefault((parent, h), len(nodes) + 1)
            if matching and node in cache:
                hits += n
            else:
                matching = False
            chain.append(node)
            parent = node
        if capacity_blocks == 0:
            continue
        for node in reversed(chain):  # deepest first: the root ends most recent, the deepest is evicted first
            cache[node] = None
            cache.move_to_end(node)
        while len(cache) > capacity_blocks:
            cache.popitem(last=False)
    return hits / total if total else 0.0
