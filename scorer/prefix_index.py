"""Which endpoint has probably cached which prompt prefix: a bounded, approximate mirror of the fleet's KV caches.

Why it exists: the picker cannot see inside the servers' caches (without KV events), but it knows what it sent
where. Recording the block hashes of every prompt against the endpoint that got it, and forgetting the least
recently used blocks per endpoint at roughly the size of its real cache, predicts prefix hits well enough to route
on (GIE's approximate prefix-cache plugin; llm-d's "optimized baseline").

Structure:
- `_owners`: block hash -> bit mask of endpoint slots that hold it (one Python int; bit i = slot i);
- `_lrus`: per endpoint, a plain `dict` of its hashes in recency order (insertion order; a refreshed hash is
  deleted and inserted again), least recently used first, at most `capacity` long. Evicting a hash from an
  endpoint's LRU clears that endpoint's bit, and the hash leaves `_owners` at zero.

Plain dicts of ints, not `OrderedDict`s: a dict holding only ints is invisible to the garbage collector, while an
`OrderedDict` is a tracked container whose every entry a full collection visits (90 ms per collection with 64
endpoints x 31,250 blocks, measured), and a plain dict entry takes half the memory. The price: refreshing a hash is
a delete and an insert (~70 ns) instead of `move_to_end` (~20 ns), on the learning path only.

Bounds, two of them:
- `capacity` blocks per endpoint: the size of one server's real cache (beyond it the server has evicted too); one
  default for all, or each endpoint's own (`set_capacity`, from its reported KV size: scorer/index_sizing.py);
- `max_entries` (endpoint, block) entries over all endpoints: the picker's memory budget (llm-d's indexer ran out
  of memory, llm-d-kv-cache #1158). Over it, the endpoint holding the most entries gives up its least recently
  used ones, so busy endpoints share the budget equally while a quiet one keeps what it holds (max-min fairness).

A prompt is recorded tail first, so its head blocks end up most recently used: a shared system prompt outlives the
unique tails that followed it, as the server's own LRU of unreferenced blocks behaves.

Matching by bisection: a block's hash stands for its whole prefix (`scorer.hashing` chains them), every record is a
prompt's head (block 0 on), and a block is always less recently used than its ancestors (recorded tail first, and
refreshing a block refreshes its ancestors after it), so evicting the least recently used never removes an ancestor
and keeps a descendant: what an endpoint holds of a prompt is always blocks 0..d-1. Along a prompt the owner masks
can then only lose bits, and `match` bisects for the few places where they do: about (distinct depths) x log2(blocks)
dict lookups instead of one per block (55 instead of 2,048 for a 32k-token prompt with five depths). Each lookup
into a table of millions of entries is a cache miss, which is why matching was memory-bound. `match_exact` walks
every block (the same answer on anything `record` built; tests compare them).

Memory: `ENTRY_BYTES` (400) per (endpoint, block) entry is what the budget counts: the worst case of what an entry
holds. An entry is an LRU slot, an `_owners` slot and the hash's int object (40 bytes); a dict resized under churn
keeps 3 to 6 slots per live entry (24 bytes each: at most 144 bytes per entry for `_owners`), and an LRU table past
`_COMPACT_BYTES` (200) per entry is compacted. Measured (`make bench-index-memory`: 100 endpoints, 100k-token
distinct prompts, CPython 3.11, glibc's mmap threshold fixed as the picker fixes it, `scorer.allocator`), an entry
added 160-290 bytes of resident memory, so the budget is an upper bound on what the index adds to the process.
`stats()` reports the tables' real size.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from scorer.owner_bits import clear_bit, longest_prefix

ENTRY_BYTES = 400  # budgeted bytes per (endpoint, block) entry: the measured worst case, rounded up
_INT_BYTES = 40  # one 64-bit hash as a Python int (36 bytes, allocated in 8-byte steps)
_COMPACT_BYTES = 200  # an LRU table above this many bytes per entry (3x its usual 48-144) is copied smaller
_COMPACT_FLOOR = 64 * 1024  # small tables are never worth copying


@dataclass(frozen=True)
class PrefixIndexStats:
    """The index's own accounting, for the metrics and the memory benchmark."""

    endpoints: int
    entries: int  # (endpoint, block) pairs: what the budget bounds
    hashes: int  # distinct block hashes held by at least one endpoint
    max_entries: int | None  # the budget in entries (None: only the per-endpoint capacity bounds the index)
    evicted_capacity: int  # entries evicted because an endpoint's LRU was full
    evicted_budget: int  # entries evicted because the index was over its budget
    compactions: int  # LRU tables copied into smaller ones after a large eviction
    container_bytes: int  # the dicts' tables, exactly (sys.getsizeof)
    estimated_bytes: int  # containers + the hashes' int objects (counted once per entry, an upper bound)


class PrefixIndex:
    def __init__(self, capacity_per_endpoint: int, max_entries: int | None = None):
        if capacity_per_endpoint < 1:
            raise ValueError(f"capacity_per_endpoint must be >= 1, got {capacity_per_endpoint}")
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 or None, got {max_entries}")
        self.capacity = capacity_per_endpoint
        self.max_entries = max_entries
        self.bytes_per_token: float | None = None  # what sized the endpoints' capacities, when their owner says
        self._owners: dict[int, int] = {}
        self._lrus: dict[str, dict[int, None]] = {}
        self._slot_of: dict[str, int] = {}
        self._address_of: dict[int, str] = {}
        self._free_slots: list[int] = []
        self._capacity_of: dict[str, int] = {}  # endpoints sized apart from `capacity` (scorer/index_sizing.py)
        self._entries = 0
        self.evicted_capacity = 0
        self.evicted_budget = 0
        self.compactions = 0  # LRU tables copied into smaller ones after a large eviction

    # ---- reading (never changes recency, so explaining a decision has no effect) -------------------------
    def match(self, hashes: Sequence[int]) -> dict[str, int]:
        """Per endpoint, how many blocks from block 0 on it holds consecutively (endpoints with none are absent),
        by bisection (module docstring: what an endpoint holds of a prompt is a prefix of it)."""
        matched: dict[str, int] = {}
        count = len(hashes)
        get = self._owners.get
        alive = get(hashes[0], 0) if count else 0
        start = 0  # every bit of `alive` is set at hashes[start]
        while alive:
            low, high = start + 1, count  # the first block where a bit of `alive` is missing, or `count`
            while low < high:
                middle = (low + high) // 2
                if get(hashes[middle], 0) & alive == alive:
                    low = middle + 1
                else:
                    high = middle
            still = get(hashes[low], 0) & alive if low < count else 0
            dropped = alive & ~still
            while dropped:
                lowest = dropped & -dropped
                matched[self._address_of[lowest.bit_length() - 1]] = low
                dropped ^= lowest
            alive, start = still, low
        return matched

    def match_exact(self, hashes: Sequence[int]) -> dict[str, int]:
        """`match` by walking every block: the reference `match` is checked against."""
        return longest_prefix(self._owners, self._address_of, hashes)

    def blocks(self, address: str) -> int:
        """How many block hashes the endpoint currently holds in the index."""
        lru = self._lrus.get(address)
        return len(lru) if lru is not None else 0

    def capacity_of(self, address: str) -> int:
        """The endpoint's capacity in blocks: its own if one was set, else the index's default."""
        return self._capacity_of.get(address, self.capacity)

    def addresses(self) -> list[str]:
        return list(self._lrus)

    def __len__(self) -> int:
        """Distinct block hashes held by at least one endpoint."""
        return len(self._owners)

    @property
    def entries(self) -> int:
        """(endpoint, block) entries over all endpoints: what `max_entries` bounds."""
        return self._entries

    def stats(self) -> PrefixIndexStats:
        """Counts and sizes, in O(endpoints)."""
        containers = sys.getsizeof(self._owners) + sum(sys.getsizeof(lru) for lru in self._lrus.values())
        return PrefixIndexStats(
            endpoints=len(self._lrus),
            entries=self._entries,
            hashes=len(self._owners),
            max_entries=self.max_entries,
            evicted_capacity=self.evicted_capacity,
            evicted_budget=self.evicted_budget,
            compactions=self.compactions,
            container_bytes=containers,
            estimated_bytes=containers + _INT_BYTES * self._entries,
        )

    # ---- learning ----------------------------------------------------------------------------------------
    def record(self, address: str, hashes: Sequence[int]) -> None:
        """The endpoint was sent a prompt with these block hashes: it now holds them, head most recently used."""
        bit = 1 << self._slot(address)
        lru = self._lrus[address]
        owners = self._owners
        before = len(lru)
        capacity = self._capacity_of.get(address, self.capacity)
        head = hashes[:capacity]  # a longer tail would be evicted by its own head anyway
        pop, get = lru.pop, owners.get
        for block_hash in reversed(head):
            held = pop(block_hash, 1) is None  # refreshed: deleted, then inserted again at the recent end
            lru[block_hash] = None
            if not held:
                mask = get(block_hash)
                owners[block_hash] = bit if mask is None else mask | bit
        self._entries += len(lru) - before
        excess = len(lru) - capacity
        if excess > 0:
            self._evict_oldest(address, excess)
            self.evicted_capacity += excess
        if self.max_entries is not None and self._entries > self.max_entries:
            self._enforce_budget()

    def lru(self, address: str) -> list[int]:
        """The endpoint's block hashes, least recently used first (a copy)."""
        return list(self._lrus.get(address, ()))

    def restore(self, address: str, hashes: Sequence[int]) -> None:
        """Take an endpoint's blocks as another index held them (`lru`, least recently used first): they become
        its most recently used, in that order; its capacity and the budget still apply (the oldest go first)."""
        self.record(address, hashes[::-1])  # `record` takes a prompt's head first and inserts its tail first

    def set_capacity(self, address: str, blocks: int) -> None:
        """Size one endpoint's LRU (the size of its real cache); a smaller size evicts its oldest blocks at once."""
        if blocks < 1:
            raise ValueError(f"capacity must be >= 1 block, got {blocks}")
        self._capacity_of[address] = blocks
        excess = self.blocks(address) - blocks
        if excess > 0:
            self._evict_oldest(address, excess)
            self.evicted_capacity += excess

    def remove_endpoint(self, address: str) -> None:
        """Forget everything about an endpoint that left the pool (its capacity too), and free its slot."""
        self._capacity_of.pop(address, None)
        lru = self._lrus.pop(address, None)
        if lru is None:
            return
        slot = self._slot_of.pop(address)
        del self._address_of[slot]
        bit = 1 << slot
        for block_hash in lru:
            self._clear_bit(block_hash, bit)
        self._entries -= len(lru)
        self._free_slots.append(slot)

    def retain(self, present: Iterable[str]) -> None:
        """Remove every endpoint that is not in `present`."""
        keep = set(present)
        for address in [a for a in self._lrus if a not in keep]:
            self.remove_endpoint(address)

    # ---- helpers -----------------------------------------------------------------------------------------
    def _slot(self, address: str) -> int:
        slot = self._slot_of.get(address)
        if slot is None:
            slot = self._free_slots.pop() if self._free_slots else len(self._slot_of)
            self._slot_of[address] = slot
            self._address_of[slot] = address
            self._lrus[address] = {}
        return slot

    def _evict_oldest(self, address: str, count: int) -> None:
        """Drop an endpoint's `count` least recently used hashes (one pass over the dict's head, then deletes).

        A dict never shrinks when entries leave it, so an LRU that a long prompt grew and the budget then cut keeps
        the table of its peak: past `_COMPACT_BYTES` per entry it is copied into a table sized for what is left
        (O(entries left), order kept)."""
        lru = self._lrus[address]
        owners, bit = self._owners, 1 << self._slot_of[address]
        for block_hash in list(islice(lru, count)):
            del lru[block_hash]
            clear_bit(owners, block_hash, bit)
        self._entries -= count
        if sys.getsizeof(lru) > _COMPACT_BYTES * len(lru) + _COMPACT_FLOOR:
            self._lrus[address] = dict(lru)
            self.compactions += 1

    def _enforce_budget(self) -> None:
        """Bring the entries back to `max_entries` by water-filling: the largest endpoints are cut down to one
        common level (their oldest hashes go), the smaller ones keep everything."""
        assert self.max_entries is not None
        excess = self._entries - self.max_entries
        for address, count in budget_cuts({a: len(lru) for a, lru in self._lrus.items()}, excess).items():
            self._evict_oldest(address, count)
            self.evicted_budget += count

    def _clear_bit(self, block_hash: int, bit: int) -> None:
        clear_bit(self._owners, block_hash, bit)


def budget_cuts(sizes: dict[str, int], excess: int) -> dict[str, int]:
    """How many entries each endpoint gives up so that `excess` go in all: the largest are cut to a common level
    (max-min fair), ties broken by address. Pure, O(n log n) for n endpoints."""
    if excess <= 0:
        return {}
    order = sorted(sizes, key=lambda a: (-sizes[a], a))
    total = 0
    for k, address in enumerate(order, start=1):
        total += sizes[address]
        floor = sizes[order[k]] if k < len(order) else 0
        if total - k * floor >= excess:
            break
    level = max(0, (total - excess) // k)  # cutting the k largest to `level` removes `excess` or up to k - 1 more
    spare = total - k * level - excess
    cuts: dict[str, int] = {}
    for i, address in enumerate(order[:k]):
        count = sizes[address] - level - (1 if i >= k - spare else 0)  # the smallest of them keep one back
        if count > 0:
            cuts[address] = count
    return cuts
