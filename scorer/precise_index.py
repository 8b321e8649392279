"""Which endpoint really holds which prefix: a bounded index fed by the endpoints' own KV-cache events.

Why it exists: the approximate index (`scorer.prefix_index`) guesses a server's cache from what the picker sent
there; it cannot see evictions, requests that came from elsewhere, or resets. vLLM publishes every change of its
prefix cache (`BlockStored`, `BlockRemoved`, `AllBlocksCleared`); applying them here mirrors each cache exactly,
so a request can be scored by the prefix an endpoint *really* holds (llm-d's precise prefix-cache scorer).

Keys (our own, as llm-d computes "request keys" since llm-d-kv-cache #202): the engine's block hashes depend on
its hash algorithm and seed, which the picker cannot reproduce. Each stored block gets a key computed from the
`token_ids` the event carries, chained through its parent:

    root(block_size, lora)   = xxh64("<block_size>|<lora name or ''>")
    key(block)               = xxh64(tokens as little-endian u32, seed=key(parent))     # parent: root for block 0
    (with extra keys other than the LoRA name, e.g. cache_salt: xxh64(repr(extras), seed=that key))

The parent of the first block of an event is named by the engine hash `parent_block_hash`; a per-endpoint map
from engine hash to our key resolves it. No parent is None (vLLM) or 0 (llm-d's convention, which
llm-d-inference-sim's array-format events follow), unless the endpoint holds a block whose engine hash is 0.
A request tokenized the way the endpoint tokenizes (its `/tokenize`) then maps to the same keys through
`request_keys`, so block i of a request matches exactly when the endpoint holds the whole prefix up to block i.

Structure:
- per endpoint, `engine hash -> key` in store order (a plain dict: a re-stored hash is deleted and inserted again),
  `engine hash -> extra copies` for the rare hash held more than once (vLLM may cache two copies of one hash when
  two requests compute the same prefix at once, and reports each copy's eviction; copies are counted), and
  `key -> copies` (several engine hashes can share a key when the engine salts its hash);
- `_owners`: key -> bit mask of endpoint slots holding it (one Python int), matched from block 0 on as the
  approximate index does (one dict lookup and one AND per block, whatever the number of endpoints).

A block whose parent is unknown (events lost before a resynchronisation) is kept with no key ("orphan"): its
removal still balances, and it can never match, because the prefix it extends is unknown. Its children are
orphans too.

Bounds: at most `max_blocks_per_endpoint` engine hashes per endpoint (a real cache holds `num_gpu_blocks`; the
bound only matters when removals are lost): past it the oldest stored entries are dropped first. Memory: about
175 bytes per (endpoint, block) entry (tracemalloc, CPython 3.11: three dict slots and the key's int; 300 with the
`OrderedDict` of lists before), so 28,150 blocks (one Llama-3.1-8B replica on an H100) is ~4.9 MB per endpoint.

Every table holds only ints (and None), so the garbage collector never visits them: with an `OrderedDict` of
`[key, copies]` lists per endpoint (before), a full collection visited every entry, 96-200 ms at 16 endpoints x
28,150 blocks (measured), seconds at a hundred endpoints.

Pure: no I/O, no clock. `scorer.sources.kv_events` feeds it; the precise-prefix-cache-scorer reads it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import xxhash

from scorer.owner_bits import clear_bit, longest_prefix

_xxh64 = xxhash.xxh64_intdigest
_TOKEN_ID_LIMIT = 2**32  # token ids are hashed as unsigned 32-bit integers (array "I"), as the request parser checks


def root_key(block_size: int, lora_name: str | None) -> int:
    """The seed of a chain: blocks of different sizes or adapters never share keys."""
    return _xxh64(f"{block_size}|{lora_name or ''}".encode())


def block_key(parent: int, tokens: Sequence[int], extras: tuple[Any, ...] = ()) -> int:
    """The key of one full block given its parent's key."""
    key = _xxh64(array("I", tokens).tobytes(), parent)
    return _xxh64(repr(extras).encode(), key) if extras else key


def request_keys(tokens: Sequence[int], block_size: int, lora_name: str | None, max_blocks: int) -> list[int]:
    """The keys of a token sequence's full blocks, head first (at most `max_blocks`)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    count = min(len(tokens) // block_size, max_blocks)
    data = array("I", tokens[: count * block_size]).tobytes()
    view = memoryview(data)
    width = 4 * block_size
    keys: list[int] = []
    prev = root_key(block_size, lora_name)
    for start in range(0, count * width, width):
        prev = _xxh64(view[start : start + width], prev)
        keys.append(prev)
    return keys


class EventError(ValueError):
    """An event that cannot be applied (inconsistent lengths); nothing of it was applied."""


@dataclass
class _Endpoint:
    slot: int
    entries: dict[int, int | None]  # engine hash -> key (None: orphan), least recently stored first
    extra_copies: dict[int, int]  # engine hash -> copies beyond the first (only hashes stored more than once)
    key_copies: dict[int, int]
    block_size: int | None = None
    orphans: int = 0


@dataclass(frozen=True)
class IndexStats:
    endpoints: int
    keys: int
    blocks: int  # engine hashes held, over all endpoints
    orphans: int
    dropped_over_bound: int


class PreciseIndex:
    def __init__(self, max_blocks_per_endpoint: int = 262_144):
        if max_blocks_per_endpoint < 1:
            raise ValueError(f"max_blocks_per_endpoint must be >= 1, got {max_blocks_per_endpoint}")
        self.max_blocks_per_endpoint = max_blocks_per_endpoint
        self._owners: dict[int, int] = {}
        self._endpoints: dict[str, _Endpoint] = {}
        self._address_of: dict[int, str] = {}
        self._free_slots: list[int] = []
        self._next_slot = 0
        self.dropped_over_bound = 0
        self.lora_names: set[str] = set()  # adapters seen in events (a request for one hashes with its name)
        self._synced: set[str] = set()

    # ---- membership --------------------------------------------------------------------------------------
    def add_endpoint(self, address: str) -> None:
        """Start indexing an endpoint (its events are ignored until then). No-op if known."""
        if address in self._endpoints:
            return
        slot = self._free_slots.pop() if self._free_slots else self._take_slot()
        self._endpoints[address] = _Endpoint(slot, {}, {}, {})
        self._address_of[slot] = address

    def remove_endpoint(self, address: str) -> None:
        """Forget an endpoint and free its slot."""
        if address not in self._endpoints:
            return
        self.clear(address)
        self._synced.discard(address)
        ep = self._endpoints.pop(address)
        del self._address_of[ep.slot]
        self._free_slots.append(ep.slot)

    def retain(self, present: Iterable[str]) -> None:
        keep = set(present)
        for address in [a for a in self._endpoints if a not in keep]:
            self.remove_endpoint(address)

    def has(self, address: str) -> bool:
        return address in self._endpoints

    def set_synced(self, address: str, synced: bool) -> None:
        """Whether the endpoint's entries can be trusted (its event stream is followed and caught up)."""
        if synced and address in self._endpoints:
            self._synced.add(address)
        else:
            self._synced.discard(address)

    def synced(self, address: str) -> bool:
        return address in self._synced

    def addresses(self) -> list[str]:
        return list(self._endpoints)

    # ---- events ------------------------------------------------------------------------------------------
    def apply(self, address: str, event: Any) -> None:
        """Apply one decoded event (BlockStored, BlockRemoved or AllBlocksCleared) from `address`.

        Unknown endpoints and unknown event types are ignored; an inconsistent BlockStored raises `EventError`.
        """
        ep = self._endpoints.get(address)
        if ep is None:
            return
        kind = type(event).__name__
        if kind == "BlockStored":
            self._store(ep, event)
        elif kind == "BlockRemoved":
            for engine_hash in event.block_hashes:
                self._remove(ep, engine_hash)
        elif kind == "AllBlocksCleared":
            self.clear(address)

    def clear(self, address: str) -> None:
        """Drop everything an endpoint holds (AllBlocksCleared, or a gap that could not be repaired)."""
        ep = self._endpoints.get(address)
        if ep is None:
            return
        bit = 1 << ep.slot
        for key in ep.key_copies:
            self._clear_bit(key, bit)
        ep.entries.clear()
        ep.extra_copies.clear()
        ep.key_copies.clear()
        ep.orphans = 0

    # ---- reading -----------------------------------------------------------------------------------------
    def match(self, keys: Sequence[int]) -> dict[str, int]:
        """Per endpoint, how many blocks from block 0 on it holds consecutively (endpoints with none are absent)."""
        return longest_prefix(self._owners, self._address_of, keys)

    def block_size(self, address: str) -> int | None:
        """The block size the endpoint's events declared (None before its first BlockStored)."""
        ep = self._endpoints.get(address)
        return ep.block_size if ep is not None else None

    def engine_hashes(self, address: str) -> dict[int, int]:
        """Engine block hash -> copies the index believes the endpoint holds (for agreement checks)."""
        ep = self._endpoints.get(address)
        if ep is None:
            return {}
        extra = ep.extra_copies
        return {h: 1 + extra.get(h, 0) for h in ep.entries}

    def blocks(self, address: str) -> int:
        ep = self._endpoints.get(address)
        return len(ep.entries) if ep is not None else 0

    def stats(self) -> IndexStats:
        eps = self._endpoints.values()
        return IndexStats(
            endpoints=len(self._endpoints),
            keys=len(self._owners),
            blocks=sum(len(e.entries) for e in eps),
            orphans=sum(e.orphans for e in eps),
            dropped_over_bound=self.dropped_over_bound,
        )

    # ---- helpers -----------------------------------------------------------------------------------------
    def _store(self, ep: _Endpoint, ev: Any) -> None:
        hashes, tokens, bs = list(ev.block_hashes), ev.token_ids, ev.block_size
        if not isinstance(bs, int) or bs < 1:
            raise EventError(f"BlockStored.block_size must be a positive integer, got {bs!r}")
        if len(tokens) != len(hashes) * bs:
            raise EventError(f"BlockStored: {len(hashes)} blocks of {bs} tokens but {len(tokens)} token ids")
        if tokens and not (min(tokens) >= 0 and max(tokens) < _TOKEN_ID_LIMIT):  # array("I") holds uint32
            raise EventError(f"BlockStored: token ids must be in [0, 2**32), got {min(tokens)}..{max(tokens)}")
        extra_keys = getattr(ev, "extra_keys", None)
        if extra_keys is not None and len(extra_keys) != len(hashes):
            raise EventError(f"BlockStored: {len(extra_keys)} extra_keys entries for {len(hashes)} blocks")
        lora = getattr(ev, "lora_name", None)
        if lora:
            self.lora_names.add(lora)
        ep.block_size = bs
        parent_hash = ev.parent_block_hash
        # None is vLLM's "no parent"; 0 is llm-d's (its consumer, llm-d-router pkg/kvevents/pool.go, treats
        # parent 0 as none, and llm-d-inference-sim's array-format events send 0), unless 0 names a held block
        if parent_hash is None or (parent_hash == 0 and 0 not in ep.entries):
            parent: int | None = root_key(bs, lora)
        else:
            parent = ep.entries.get(parent_hash)  # None: unknown, or an orphan itself
        bit = 1 << ep.slot
        for i, engine_hash in enumerate(hashes):
            if engine_hash in ep.entries:  # another copy of a block it already holds: now the most recent
                key = ep.entries.pop(engine_hash)
                ep.entries[engine_hash] = key
                ep.extra_copies[engine_hash] = ep.extra_copies.get(engine_hash, 0) + 1
                if key is not None:
                    ep.key_copies[key] += 1
                parent = key
                continue
            key = None
            if parent is not None:
                extras = extra_keys[i] if extra_keys is not None else None
                kept = tuple(k for k in extras if k != lora) if extras else ()
                key = block_key(parent, tokens[i * bs : (i + 1) * bs], kept)
                count = ep.key_copies.get(key, 0)
                ep.key_copies[key] = count + 1
                if not count:
                    self._owners[key] = self._owners.get(key, 0) | bit
            else:
                ep.orphans += 1
            ep.entries[engine_hash] = key
            parent = key
        excess = len(ep.entries) - self.max_blocks_per_endpoint
        if excess > 0:
            for engine_hash in list(islice(ep.entries, excess)):
                self._drop_key(ep, ep.entries.pop(engine_hash), 1 + ep.extra_copies.pop(engine_hash, 0))
            self.dropped_over_bound += excess

    def _remove(self, ep: _Endpoint, engine_hash: int) -> None:
        if engine_hash not in ep.entries:
            return  # stored before we were listening, or already dropped: nothing to undo
        extra = ep.extra_copies.get(engine_hash)
        if extra:  # one of several copies goes
            if extra > 1:
                ep.extra_copies[engine_hash] = extra - 1
            else:
                del ep.extra_copies[engine_hash]
            key = ep.entries[engine_hash]
            if key is not None:
                ep.key_copies[key] -= 1
            return
        self._drop_key(ep, ep.entries.pop(engine_hash), 1)

    def _drop_key(self, ep: _Endpoint, key: int | None, copies: int) -> None:
        if key is None:
            ep.orphans -= 1
            return
        left = ep.key_copies[key] - copies
        if left > 0:
            ep.key_copies[key] = left
        else:
            del ep.key_copies[key]
            self._clear_bit(key, 1 << ep.slot)

    def _take_slot(self) -> int:
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def _clear_bit(self, key: int, bit: int) -> None:
        clear_bit(self._owners, key, bit)
