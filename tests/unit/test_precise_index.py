"""The precise prefix index, the KV-event sequence tracker and the token cache: table-driven, no I/O."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.kv_event_types import AllBlocksCleared, BlockRemoved, BlockStored
from scorer.kv_sequence import APPLY, RESTART, SKIP, Gap, SequenceTracker
from scorer.precise_index import EventError, PreciseIndex, request_keys
from scorer.sources.kv_events import KVEventsOptions, event_endpoints
from scorer.token_cache import TokenCache

BS = 4
A, B, C, D = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]


def stored(hashes: list[int], parent: int | None, *blocks: list[int], **kw: Any) -> BlockStored:
    return BlockStored(hashes, parent, [t for b in blocks for t in b], BS, **kw)


def keys(*blocks: list[int], lora: str | None = None) -> list[int]:
    return request_keys([t for b in blocks for t in b], BS, lora, 1000)


@dataclass
class Case:
    name: str
    events: list[tuple[str, Any]]  # (endpoint, event)
    query: list[int]  # request keys
    matched: dict[str, int]  # endpoint -> leading blocks held
    held: dict[str, dict[int, int]] = field(default_factory=dict)  # endpoint -> engine hash -> copies
    bound: int = 1000


CASES = [
    Case(
        "one event, two blocks", [("e1", stored([10, 11], None, A, B))], keys(A, B), {"e1": 2}, {"e1": {10: 1, 11: 1}}
    ),
    Case(
        "chained through parent_block_hash across events",
        [("e1", stored([10], None, A)), ("e1", stored([11], 10, B))],
        keys(A, B),
        {"e1": 2},
    ),
    Case("prefix diverges after block 0", [("e1", stored([10, 11], None, A, B))], keys(A, C), {"e1": 1}),
    Case("nothing in common", [("e1", stored([10, 11], None, A, B))], keys(C, D), {}),
    Case(
        "a removed tail shortens the match",
        [("e1", stored([10, 11], None, A, B)), ("e1", BlockRemoved([11]))],
        keys(A, B),
        {"e1": 1},
        {"e1": {10: 1}},
    ),
    Case(
        "a removed head breaks the whole prefix",
        [("e1", stored([10, 11], None, A, B)), ("e1", BlockRemoved([10]))],
        keys(A, B),
        {},
        {"e1": {11: 1}},
    ),
    Case(
        "two copies need two removals",
        [("e1", stored([10], None, A)), ("e1", stored([10], None, A)), ("e1", BlockRemoved([10]))],
        keys(A),
        {"e1": 1},
        {"e1": {10: 1}},
    ),
    Case(
        "both copies removed",
        [("e1", stored([10], None, A)), ("e1", stored([10], None, A)), ("e1", BlockRemoved([10, 10]))],
        keys(A),
        {},
        {"e1": {}},
    ),
    Case(
        "AllBlocksCleared empties the endpoint only",
        [("e1", stored([10], None, A)), ("e2", stored([20], None, A)), ("e1", AllBlocksCleared())],
        keys(A),
        {"e2": 1},
        {"e1": {}, "e2": {20: 1}},
    ),
    Case(
        "unknown parent: orphan, never matches, removal balances",
        [("e1", stored([11], 99, B)), ("e1", stored([12], 11, C))],
        keys(A, B),
        {},
        {"e1": {11: 1, 12: 1}},
    ),
    Case(
        "parent 0 is no parent (llm-d's convention; llm-d-inference-sim's array events)",
        [("e1", stored([10, 11], 0, A, B))],
        keys(A, B),
        {"e1": 2},
    ),
    Case(
        "parent 0 names a held block whose engine hash is 0",
        [("e1", stored([0], None, A)), ("e1", stored([11], 0, B))],
        keys(A, B),
        {"e1": 2},
    ),
    Case(
        "endpoints hashing differently share our keys",
        [("e1", stored([10, 11], None, A, B)), ("e2", stored([777, 888], None, A, B))],
        keys(A, B),
        {"e1": 2, "e2": 2},
    ),
    Case(
        "longest run per endpoint",
        [("e1", stored([10, 11, 12], None, A, B, C)), ("e2", stored([20], None, A))],
        keys(A, B, C, D),
        {"e1": 3, "e2": 1},
    ),
    Case("LoRA blocks do not match a base request", [("e1", stored([10], None, A, lora_name="sql"))], keys(A), {}),
    Case(
        "LoRA blocks match the adapter",
        [("e1", stored([10], None, A, lora_name="sql"))],
        keys(A, lora="sql"),
        {"e1": 1},
    ),
    Case(
        "a LoRA name in extra_keys is not a salt",
        [("e1", stored([10], None, A, lora_name="sql", extra_keys=[("sql",)]))],
        keys(A, lora="sql"),
        {"e1": 1},
    ),
    Case(
        "salted blocks (cache_salt in extra_keys) never match an unsalted request",
        [("e1", stored([10], None, A, extra_keys=[("salt-1",)]))],
        keys(A),
        {},
    ),
    Case(
        "bounded: the oldest stored entries go first",
        [("e1", stored([10, 11, 12], None, A, B, C))],
        keys(A, B, C),
        {},
        {"e1": {11: 1, 12: 1}},
        bound=2,
    ),
    Case("unknown removals are ignored", [("e1", BlockRemoved([5, 6]))], keys(A), {}, {"e1": {}}),
    Case("events of an unknown endpoint are ignored", [("zz", stored([10], None, A))], keys(A), {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_index(case: Case) -> None:
    index = PreciseIndex(case.bound)
    index.add_endpoint("e1")
    index.add_endpoint("e2")
    for address, event in case.events:
        index.apply(address, event)
    assert index.match(case.query) == case.matched
    for address, held in case.held.items():
        assert index.engine_hashes(address) == held
    stats = index.stats()
    assert stats.blocks == sum(index.blocks(a) for a in ("e1", "e2"))


def test_orphans_are_counted_and_released() -> None:
    index = PreciseIndex()
    index.add_endpoint("e1")
    index.apply("e1", stored([11, 12], 99, B, C))
    assert index.stats().orphans == 2
    index.apply("e1", BlockRemoved([11, 12]))
    assert index.stats().orphans == 0 and index.stats().keys == 0


def test_the_index_tables_are_invisible_to_the_garbage_collector() -> None:
    index = PreciseIndex(max_blocks_per_endpoint=2)
    index.add_endpoint("e1")
    index.apply("e1", stored([10, 11], None, A, B))
    index.apply("e1", stored([10], None, A))  # a second copy of 10: now the most recent
    index.apply("e1", stored([12], 11, C))  # over the bound of 2: the oldest, 11, is dropped
    assert index.engine_hashes("e1") == {10: 2, 12: 1} and index.stats().dropped_over_bound == 1
    ep = index._endpoints["e1"]
    tables = (index._owners, ep.entries, ep.extra_copies, ep.key_copies)
    assert not any(gc.is_tracked(t) for t in tables)  # a full collection never visits the entries


def test_inconsistent_event_changes_nothing() -> None:
    index = PreciseIndex()
    index.add_endpoint("e1")
    with pytest.raises(EventError, match="token ids"):
        index.apply("e1", BlockStored([10, 11], None, A, BS))
    with pytest.raises(EventError, match="extra_keys"):
        index.apply("e1", BlockStored([10], None, A, BS, extra_keys=[None, None]))
    with pytest.raises(EventError, match="block_size"):
        index.apply("e1", BlockStored([10], None, A, 0))
    for bad in (-1, 2**32):  # they reached array("I") as an OverflowError, which ended the endpoint's event stream
        with pytest.raises(EventError, match=r"token ids must be in \[0, 2\*\*32\)"):
            index.apply("e1", BlockStored([10], None, [1, 2, 3, bad], BS))
    assert index.engine_hashes("e1") == {} and index.stats().keys == 0


def test_removing_an_endpoint_frees_its_keys_and_slot() -> None:
    index = PreciseIndex()
    for name in ("e1", "e2"):
        index.add_endpoint(name)
        index.set_synced(name, True)
        index.apply(name, stored([10, 11], None, A, B))
    index.retain(["e2"])
    assert index.match(keys(A, B)) == {"e2": 2}
    assert not index.synced("e1") and index.synced("e2") and index.addresses() == ["e2"]
    index.add_endpoint("e3")  # reuses the freed slot: must not inherit e1's blocks
    assert index.match(keys(A, B)) == {"e2": 2} and index.blocks("e3") == 0
    index.remove_endpoint("e2")
    assert index.stats().keys == 0


def test_set_synced_needs_a_known_endpoint() -> None:
    index = PreciseIndex()
    index.set_synced("e1", True)
    assert not index.synced("e1")


def test_request_keys_chain_and_limits() -> None:
    tokens = A + B + C + [99]  # a trailing partial block is ignored
    full = request_keys(tokens, BS, None, 100)
    assert len(full) == 3
    assert request_keys(tokens, BS, None, 2) == full[:2]
    assert request_keys(A + D + C, BS, None, 100)[0] == full[0]
    assert request_keys(A + D + C, BS, None, 100)[2] != full[2]  # same block, different prefix: different key
    assert request_keys(tokens, 2, None, 100)[0] != full[0]  # block size is part of the chain
    with pytest.raises(ValueError):
        request_keys(tokens, 0, None, 1)


# ---- sequence numbers ------------------------------------------------------------------------------------------
SEQ_CASES: list[tuple[str, list[int], list[object]]] = [
    ("in order from 0", [0, 1, 2], [APPLY, APPLY, APPLY]),
    ("joined late", [5], [Gap(0, 4)]),
    ("a lost message", [0, 1, 3], [APPLY, APPLY, Gap(2, 2)]),
    ("several lost", [0, 4], [APPLY, Gap(1, 3)]),
    ("publisher restarted", [0, 1, 2, 0], [APPLY, APPLY, APPLY, RESTART]),
    ("restart seen after a loss", [0, 1, 2, 1], [APPLY, APPLY, APPLY, RESTART]),
]


@pytest.mark.parametrize(("name", "seqs", "actions"), SEQ_CASES, ids=[c[0] for c in SEQ_CASES])
def test_sequence_tracker(name: str, seqs: list[int], actions: list[object]) -> None:
    tracker = SequenceTracker()
    got = []
    for seq in seqs:
        action = tracker.on_live(seq)
        got.append(action)
        if action == APPLY:
            tracker.applied_through(seq)
    assert got == actions


def test_duplicates_of_replayed_batches_are_skipped() -> None:
    tracker = SequenceTracker()
    assert tracker.on_live(0) == APPLY
    tracker.applied_through(0)
    assert tracker.on_live(3) == Gap(1, 2)
    tracker.applied_through(6)  # the replay brought 1..6 (newer than the live message that showed the gap)
    assert [tracker.on_live(s) for s in (4, 5, 6, 7)] == [SKIP, SKIP, SKIP, APPLY]
    tracker.applied_through(7)
    tracker.reconnected()  # same publisher after a lost connection: it goes on above what was applied
    assert tracker.on_live(9) == Gap(8, 8)
    tracker.applied_through(9)
    tracker.reconnected()  # a new publisher (restarted server) starts again at or below it
    assert tracker.on_live(2) == RESTART
    tracker.reset()
    assert tracker.next_wanted() == 0 and tracker.on_live(0) == APPLY
    with pytest.raises(ValueError):
        tracker.on_live(-1)


# ---- token cache -----------------------------------------------------------------------------------------------
def test_token_cache_is_bounded_in_entries_and_tokens() -> None:
    cache = TokenCache(max_entries=2, max_tokens=10)
    cache.put("m", "a", [1, 2, 3])
    cache.put("m", "b", [4, 5, 6])
    assert list(cache.get("m", "a") or []) == [1, 2, 3]  # a is now the most recently used
    cache.put("m", "c", [7])
    assert cache.get("m", "b") is None and len(cache) == 2  # b was least recently used
    cache.put("m", "d", [0] * 9)  # 3 + 1 + 9 > 10 tokens: evicts until it fits
    assert cache.tokens <= 10 and cache.get("m", "d") is not None
    cache.put("m", "huge", [0] * 11)  # larger than the cache: not kept, nothing evicted for it
    assert cache.get("m", "huge") is None and cache.get("m", "d") is not None
    assert cache.get("other-model", "d") is None  # keyed by model too
    assert cache.hits == 3 and cache.misses == 3
    with pytest.raises(ValueError):
        TokenCache(0, 1)


# ---- where an endpoint's events are -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "events", "replay", "expected"),
    [
        ("10.0.0.1:8000", 1000, 2000, ("tcp://10.0.0.1:9000", "tcp://10.0.0.1:10000")),
        ("10.0.0.1:8000", 1000, None, ("tcp://10.0.0.1:9000", None)),
        ("10.0.0.1:5556", 0, 3, ("tcp://10.0.0.1:5556", "tcp://10.0.0.1:5559")),  # any offsets, 0 included
        ("10.0.0.1:65000", 1000, 2000, ValueError),
    ],
)
def test_event_endpoints(address: str, events: int, replay: int | None, expected: object) -> None:
    opts = KVEventsOptions(port_offset=events, replay_port_offset=replay)
    if expected is ValueError:
        with pytest.raises(ValueError, match="not a valid port"):
            event_endpoints(address, opts)
    else:
        assert event_endpoints(address, opts) == expected
