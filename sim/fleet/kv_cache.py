"""Paged KV cache with automatic prefix caching, the way vLLM V1's BlockPool/KVCacheManager behave.

Why it exists: prefix-aware routing is only worth measuring against a cache that really fills, shares and
evicts. This module holds `num_gpu_blocks` blocks of `block_size` tokens. A full block gets a chained hash
(parent hash, its tokens, extra keys such as the LoRA adapter) and becomes reusable by any later request
with the same prefix. Freed blocks go to the tail of one free queue (a request's blocks in reverse order, so
the deepest blocks of a prefix are evicted first); allocation takes from the head, evicting the cached hash
it held (LRU of unreferenced blocks). Every cache change is reported as a vLLM KV event.

Pure: no I/O, no clock. The engine drives it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import blake2b

from common.kv_event_types import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent

_U64 = struct.Struct(">Q")


def _seed_hash(model: str) -> int:
    return int.from_bytes(blake2b(model.encode(), digest_size=8).digest(), "big")


def chain_hash(parent: int, tokens: Sequence[int], extra: str | None) -> int:
    """64-bit chained block hash: blake2b(parent || tokens as u32 || extra). Deterministic across processes."""
    h = blake2b(_U64.pack(parent), digest_size=8)
    h.update(struct.pack(f"<{len(tokens)}I", *tokens))
    if extra:
        h.update(b"\x00" + extra.encode())
    return int.from_bytes(h.digest(), "big")


@dataclass(slots=True, eq=False)
class Block:
    block_id: int
    ref_cnt: int = 0
    block_hash: int | None = None


@dataclass(slots=True)
class BlockHashes:
    """The chained hashes of a token sequence's full blocks, extended as the sequence grows."""

    seed: int
    block_size: int
    extra: str | None
    hashes: list[int] = field(default_factory=list)

    def extend(self, tokens: Sequence[int]) -> None:
        bs = self.block_size
        full = len(tokens) // bs
        prev = self.hashes[-1] if self.hashes else self.seed
        for i in range(len(self.hashes), full):
            prev = chain_hash(prev, tokens[i * bs : (i + 1) * bs], self.extra)
            self.hashes.append(prev)


class OutOfBlocks(Exception):
    """Not enough free blocks for an allocation; nothing was changed."""


class KVCache:
    """Block pool + prefix cache. Blocks are identified by index; block 0 is vLLM's reserved null block."""

    def __init__(self, num_gpu_blocks: int, block_size: int, model: str, enable_prefix_caching: bool = True):
        if num_gpu_blocks < 2:
            raise ValueError("num_gpu_blocks must be at least 2")
        self.block_size = block_size
        self.num_gpu_blocks = num_gpu_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.seed = _seed_hash(model)
        self.blocks = [Block(i) for i in range(num_gpu_blocks)]
        # Free queue in LRU order (head = next to reuse). Block 0 is the null block and never free.
        self._free: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in self.blocks[1:])
        self._cached: dict[int, dict[int, Block]] = {}
        self.events: list[KVEvent] = []

    # ---- queries -------------------------------------------------------------------------------------
    @property
    def usable_blocks(self) -> int:
        return self.num_gpu_blocks - 1

    def num_free(self) -> int:
        return len(self._free)

    def usage(self) -> float:
        """Fraction of usable blocks referenced by running requests (vLLM's kv_cache_usage_perc)."""
        return 1.0 - len(self._free) / self.usable_blocks

    def num_cached(self) -> int:
        return sum(len(c) for c in self._cached.values())

    def cached_hashes(self) -> dict[int, int]:
        """Each cached hash with the number of block copies holding it."""
        return {h: len(c) for h, c in self._cached.items()}

    def new_hashes(self, extra: str | None) -> BlockHashes:
        return BlockHashes(self.seed, self.block_size, extra)

    def longest_hit(self, hashes: Sequence[int], max_blocks: int) -> list[Block]:
        """Cached blocks for the longest prefix of `hashes` (at most max_blocks)."""
        if not self.enable_prefix_caching:
            return []
        hit: list[Block] = []
        for h in hashes[:max_blocks]:
            copies = self._cached.get(h)
            if not copies:
                break
            hit.append(next(iter(copies.values())))
        return hit

    # ---- mutations -------------------------------------------------------------------------------------
    def touch(self, blocks: Sequence[Block]) -> None:
        """Take a reference on cache-hit blocks, removing unreferenced ones from the free queue."""
        for blk in blocks:
            if blk.ref_cnt == 0:
                del self._free[blk.block_id]
            blk.ref_cnt += 1

    def blocks_needed(self, hit: Sequence[Block]) -> int:
        """How many free-queue entries a touch of `hit` consumes (unreferenced hit blocks are in the queue)."""
        return sum(1 for b in hit if b.ref_cnt == 0)

    def allocate(self, n: int) -> list[Block]:
        if n > len(self._free):
            raise OutOfBlocks(f"need {n} blocks, {len(self._free)} free")
        out: list[Block] = []
        for _ in range(n):
            _, blk = self._free.popitem(last=False)
            self._evict_hash(blk)
            blk.ref_cnt = 1
            out.append(blk)
        return out

    def free(self, blocks: Sequence[Block]) -> None:
        """Drop a request's references; blocks reaching zero go to the free-queue tail, last block first."""
        for blk in reversed(blocks):
            blk.ref_cnt -= 1
            if blk.ref_cnt == 0:
                self._free[blk.block_id] = blk
            elif blk.ref_cnt < 0:
                raise AssertionError(f"block {blk.block_id} freed twice")

    def cache_full_blocks(
        self,
        blocks: Sequence[Block],
        hashes: Sequence[int],
        tokens: Sequence[int],
        start: int,
        end: int,
        lora_name: str | None,
    ) -> None:
        """Register blocks[start:end] (now full and computed) in the prefix cache and emit one BlockStored.

        Like vLLM, two requests that computed the same prefix concurrently each register their copy under
        the same hash (and each copy's eviction is reported), so consumers must count references.
        """
        if not self.enable_prefix_caching or end <= start:
            return
        bs = self.block_size
        for i in range(start, end):
            blk, h = blocks[i], hashes[i]
            blk.block_hash = h
            self._cached.setdefault(h, {})[blk.block_id] = blk
        self.events.append(
            BlockStored(
                block_hashes=list(hashes[start:end]),
                parent_block_hash=hashes[start - 1] if start > 0 else None,
                token_ids=list(tokens[start * bs : end * bs]),
                block_size=bs,
                lora_name=lora_name,
            )
        )

    def reset(self) -> bool:
        """Drop every cached hash (vLLM's reset_prefix_cache); refused while blocks are referenced."""
        if len(self._free) != self.usable_blocks:
            return False
        for copies in self._cached.values():
            for blk in copies.values():
                blk.block_hash = None
        self._cached.clear()
        self.events.append(AllBlocksCleared())
        return True

    def drain_events(self) -> list[KVEvent]:
        out, self.events = self.events, []
        return out

    def _evict_hash(self, blk: Block) -> None:
        h = blk.block_hash
        if h is None:
            return
        blk.block_hash = None
        copies = self._cached.get(h)
        if copies is not None and copies.pop(blk.block_id, None) is not None:
            if not copies:
                del self._cached[h]
            self.events.append(BlockRemoved(block_hashes=[h]))
