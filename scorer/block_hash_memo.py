"""The block hashes of recent prompts, reused for the prefix a new prompt shares with one of them.

Why it exists: the prefix-cache scorer hashes every prompt in `block_size`-byte blocks (`scorer.hashing`), one
xxh64 call per block in a Python loop: ~0.4 ms for a 94 KB prompt (~13.7k tokens), ~1 ms for 256 KB, the largest
part of a long prompt's decision once the body is parsed. The prompts a prefix-aware picker exists for share long
prefixes (a system prompt, a document, the earlier turns of a chat), and a chained block hash stands for the whole
prefix up to its block, so a shared prefix has the same hashes in both prompts. Comparing bytes (one `memcmp` per
step of a binary search, microseconds for 256 KB) is far cheaper than hashing them: the memo finds the longest
block-aligned prefix the new prompt shares with a recent prompt that starts with the same block, takes those hashes,
and hashes only the rest, continuing the chain.

Exact: `hashes(model, data)` is `prompt_block_hashes(model, data, block_size, max_blocks)`, bit for bit (the tests
compare them on random prompt sequences). A prompt that shares nothing costs what hashing costs, plus one dict lookup.

Bounded: at most `per_key` prompts per (model, first block), and `budget_bytes` in all (prompt bytes plus ~40 bytes
per kept hash), least recently used first out. Not thread-safe: the Director calls its plugins under its lock.
The returned list is the memo's own: callers must not mutate it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import xxhash

from scorer.hashing import model_seed

_xxh64 = xxhash.xxh64_intdigest
_BYTES_PER_HASH = 40  # a list slot and a 64-bit Python int


@dataclass(frozen=True)
class _Seen:
    data: bytes
    hashes: list[int]

    @property
    def cost(self) -> int:
        return len(self.data) + _BYTES_PER_HASH * len(self.hashes)


def common_blocks(data: bytes, other: bytes, limit: int, block_size: int) -> int:
    """How many leading `block_size` blocks (at most `limit`) `data` and `other` share: a binary search of memcmps."""
    view = memoryview(other)
    lo, hi = 0, min(limit, len(data) // block_size, len(other) // block_size)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if data.startswith(view[: mid * block_size]):
            lo = mid
        else:
            hi = mid - 1
    return lo


class BlockHashMemo:
    def __init__(self, block_size: int, max_blocks: int, *, per_key: int = 4, budget_bytes: int = 16 << 20):
        if block_size < 1 or max_blocks < 0 or per_key < 1 or budget_bytes < 0:
            raise ValueError("block_size and per_key must be >= 1, max_blocks and budget_bytes >= 0")
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.per_key = per_key
        self.budget_bytes = budget_bytes
        self._recent: OrderedDict[tuple[str, bytes], list[_Seen]] = OrderedDict()
        self._bytes = 0
        self.reused_blocks = 0  # hashes taken from the memo rather than computed, since creation
        self.hashed_blocks = 0

    def hashes(self, model: str, data: bytes) -> list[int]:
        """The chained hashes of `data`'s full blocks under `model` (see `scorer.hashing.prompt_block_hashes`)."""
        size = self.block_size
        count = min(len(data) // size, self.max_blocks)
        if count == 0:
            return []
        key = (model, data[:size])
        seen = self._recent.get(key, [])
        best, shared = None, 0
        for entry in seen:
            n = common_blocks(data, entry.data, min(count, len(entry.hashes)), size)
            if n > shared:
                best, shared = entry, n
        if best is not None and shared == count == len(best.hashes) and len(best.data) == len(data):
            self._touch(key, seen, best)  # the same prompt again (a retry, a repeated request)
            self.reused_blocks += count
            return best.hashes
        hashes = best.hashes[:shared] if best is not None else []
        prev = hashes[-1] if hashes else model_seed(model)
        view = memoryview(data)
        append = hashes.append
        for start in range(shared * size, count * size, size):
            prev = _xxh64(view[start : start + size], prev)
            append(prev)
        self.reused_blocks += shared
        self.hashed_blocks += count - shared
        self._keep(key, seen, _Seen(data, hashes))
        return hashes

    def __len__(self) -> int:
        """Prompts held."""
        return sum(len(v) for v in self._recent.values())

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def _touch(self, key: tuple[str, bytes], seen: list[_Seen], entry: _Seen) -> None:
        seen.remove(entry)
        seen.insert(0, entry)
        self._recent.move_to_end(key)

    def _keep(self, key: tuple[str, bytes], seen: list[_Seen], entry: _Seen) -> None:
        if entry.cost > self.budget_bytes:
            return
        seen.insert(0, entry)
        self._bytes += entry.cost
        while len(seen) > self.per_key:
            self._bytes -= seen.pop().cost
        self._recent[key] = seen
        self._recent.move_to_end(key)
        while self._bytes > self.budget_bytes:
            oldest_key, oldest = next(iter(self._recent.items()))
            self._bytes -= oldest.pop().cost
            if not oldest:
                del self._recent[oldest_key]
