"""Chained block hashes and the approximate prefix index: longest prefix match, LRU bounds, membership."""

from __future__ import annotations

import gc
import sys

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.hashing import model_seed, prompt_block_hashes
from scorer.prefix_index import PrefixIndex, budget_cuts

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


# ---- hashing ----------------------------------------------------------------------------------------------
def test_hash_chain_is_xxh64_seeded_with_the_model_then_the_previous_block():
    hashes = prompt_block_hashes("m", "aaaabbbbcc", block_size=4, max_blocks=10)
    first = xxhash.xxh64_intdigest(b"aaaa", model_seed("m"))
    assert model_seed("m") == xxhash.xxh64_intdigest(b"m")
    assert hashes == [first, xxhash.xxh64_intdigest(b"bbbb", first)]  # the partial block "cc" is ignored


@pytest.mark.parametrize(
    ("left", "right", "shared"),
    [
        ("abcdefgh", "abcdefgh", 2),
        ("abcdefgh", "abcdXfgh", 1),  # the second block differs, and so does everything chained after it
        ("abcdefghijkl", "abcdefgXijkl", 1),
        ("Xbcdefgh", "abcdefgh", 0),
        ("abcdefgh" + "ijkl", "abcdefgh" + "ijkX", 2),
    ],
)
def test_blocks_share_hashes_exactly_as_long_as_prefixes_agree(left: str, right: str, shared: int):
    lh, rh = prompt_block_hashes("m", left, 4, 100), prompt_block_hashes("m", right, 4, 100)
    common = next((i for i, (x, y) in enumerate(zip(lh, rh, strict=False)) if x != y), min(len(lh), len(rh)))
    assert common == shared
    assert len(set(lh[shared:]) & set(rh[shared:])) == 0  # a block after a difference never matches again


def test_same_text_under_another_model_shares_nothing():
    assert not set(prompt_block_hashes("a", "x" * 64, 8, 10)) & set(prompt_block_hashes("b", "x" * 64, 8, 10))


@pytest.mark.parametrize(
    ("text", "block_size", "max_blocks", "count"),
    [
        ("", 4, 10, 0),
        ("abc", 4, 10, 0),
        ("abcd", 4, 10, 1),
        ("a" * 40, 4, 3, 3),
        ("a" * 40, 4, 0, 0),
        ("é" * 4, 4, 9, 2),
    ],
)
def test_block_count(text: str, block_size: int, max_blocks: int, count: int):
    assert len(prompt_block_hashes("m", text, block_size, max_blocks)) == count  # "é" is 2 UTF-8 bytes


def test_str_and_bytes_hash_alike_and_bad_sizes_are_refused():
    assert prompt_block_hashes("m", "héllo wörld!", 3, 9) == prompt_block_hashes("m", "héllo wörld!".encode(), 3, 9)
    with pytest.raises(ValueError):
        prompt_block_hashes("m", "abc", 0, 1)


# ---- index ------------------------------------------------------------------------------------------------
def test_match_is_the_longest_consecutive_run_from_block_zero_per_endpoint():
    index = PrefixIndex(100)
    index.record(A, [1, 2, 3, 4])
    index.record(B, [1, 2])
    index.record(C, [9, 2, 3])  # holds blocks 2 and 3 under another head: no match from block 0
    assert index.match([1, 2, 3, 4, 5]) == {A: 4, B: 2}
    assert index.match([1, 2, 7]) == {A: 2, B: 2}
    assert index.match([7, 2, 3]) == {}
    assert index.match([]) == {}
    assert index.match([1]) == {A: 1, B: 1}


def test_a_gap_ends_the_match():
    index = PrefixIndex(100)
    index.record(A, [1, 2, 4])  # as if block 3 was evicted
    assert index.match([1, 2, 3, 4]) == {A: 2}


def test_lru_is_bounded_per_endpoint_and_keeps_the_head_of_the_last_prompt():
    index = PrefixIndex(4)
    index.record(A, [1, 2, 3])
    index.record(A, [10, 11, 12])  # 6 blocks for 4 slots: the oldest prompt's tail goes first
    assert index.blocks(A) == 4
    assert index.match([10, 11, 12]) == {A: 3}
    assert index.match([1, 2, 3]) == {A: 1}  # its head block 1 outlived its tail (3 evicted, then 2)
    assert len(index) == 4


def test_a_prompt_longer_than_the_capacity_keeps_its_head():
    index = PrefixIndex(3)
    index.record(A, list(range(100, 110)))
    assert index.blocks(A) == 3 and index.match(list(range(100, 110))) == {A: 3}


def test_recording_again_refreshes_recency():
    index = PrefixIndex(4)
    index.record(A, [1, 2])
    index.record(A, [3, 4])
    index.record(A, [1, 2])  # [1, 2] is the most recent again
    index.record(A, [5, 6])  # evicts [3, 4], not [1, 2]
    assert index.match([1, 2]) == {A: 2}
    assert index.match([3, 4]) == {}


def test_eviction_on_one_endpoint_keeps_the_hash_for_the_others():
    index = PrefixIndex(2)
    index.record(A, [1, 2])
    index.record(B, [1, 2])
    index.record(A, [7, 8])  # A forgets 1, 2
    assert index.match([1, 2]) == {B: 2}
    assert index.match([7, 8]) == {A: 2}
    assert len(index) == 4


def test_matching_does_not_change_recency():
    index = PrefixIndex(2)
    index.record(A, [1])
    index.record(A, [2])
    for _ in range(3):
        index.match([1])
    index.record(A, [3])  # still evicts 1, the least recently *recorded*
    assert index.match([1]) == {} and index.match([2]) == {A: 1}


def test_removing_an_endpoint_forgets_it_and_frees_its_slot():
    index = PrefixIndex(10)
    index.record(A, [1, 2])
    index.record(B, [1, 2, 3])
    index.remove_endpoint(A)
    index.remove_endpoint("unknown:1")  # no error
    assert index.match([1, 2, 3]) == {B: 3}
    assert index.blocks(A) == 0 and index.addresses() == [B]
    index.record(C, [5])  # reuses A's slot
    assert index.match([1, 2, 3]) == {B: 3} and index.match([5]) == {C: 1}
    index.retain([C])
    assert index.addresses() == [C] and len(index) == 1


def test_many_endpoints_match_independently():
    index = PrefixIndex(1000)
    prompt = list(range(1, 301))
    for i in range(200):  # more endpoints than a machine word has bits
        index.record(f"10.1.{i // 256}.{i % 256}:80", prompt[: i + 1])
    matched = index.match(prompt)
    assert len(matched) == 200
    assert all(matched[f"10.1.{i // 256}.{i % 256}:80"] == i + 1 for i in range(200))


def test_capacity_and_budget_must_be_positive():
    with pytest.raises(ValueError):
        PrefixIndex(0)
    with pytest.raises(ValueError):
        PrefixIndex(10, max_entries=0)


# ---- the memory budget ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sizes", "excess", "cuts"),
    [
        ({A: 10, B: 10, C: 10}, 0, {}),
        ({A: 10, B: 10, C: 10}, -3, {}),
        ({A: 100, B: 10}, 5, {A: 5}),  # the largest alone gives up everything when it can
        ({A: 12, B: 10}, 4, {A: 3, B: 1}),  # down to a common level: 9 and 9
        ({A: 10, B: 10, C: 10}, 5, {A: 2, B: 2, C: 1}),  # 8, 8, 9: ties broken by address
        ({A: 10, B: 8, C: 1}, 5, {A: 4, B: 1}),  # C, below the level, keeps its block
        ({A: 3}, 5, {A: 3}),  # cannot give more than it holds
        ({A: 5, B: 5}, 10, {A: 5, B: 5}),
    ],
)
def test_budget_cuts_cut_the_largest_to_a_common_level(sizes: dict[str, int], excess: int, cuts: dict[str, int]):
    assert budget_cuts(sizes, excess) == cuts
    assert sum(cuts.values()) == min(max(excess, 0), sum(sizes.values()))


@pytest.mark.parametrize(
    ("records", "capacity", "budget", "blocks", "evicted_capacity", "evicted_budget"),
    [
        ([(A, range(1, 7))], 100, None, {A: 6}, 0, 0),  # no budget: only the capacity bounds
        ([(A, range(1, 7))], 4, None, {A: 4}, 0, 0),  # a prompt longer than the capacity: only its head
        ([(A, range(1, 4)), (A, range(4, 7))], 4, None, {A: 4}, 2, 0),
        ([(A, range(1, 7))], 100, 4, {A: 4}, 0, 2),  # over the budget, the only endpoint gives up its oldest
        ([(A, range(1, 5)), (B, range(11, 15))], 100, 6, {A: 3, B: 3}, 0, 2),  # shared equally
        ([(A, range(1, 6)), (B, range(11, 12)), (C, range(21, 24))], 100, 6, {A: 2, B: 1, C: 3}, 0, 3),
        # the capacity first, then the budget
        ([(A, range(1, 5)), (A, range(5, 9)), (B, range(11, 13))], 6, 5, {A: 3, B: 2}, 2, 3),
        ([(A, range(1, 4)), (B, range(1, 4))], 100, 6, {A: 3, B: 3}, 0, 0),  # shared hashes count per endpoint
    ],
)
def test_the_budget_bounds_entries_over_all_endpoints(
    records: list[tuple[str, range]],
    capacity: int,
    budget: int | None,
    blocks: dict[str, int],
    evicted_capacity: int,
    evicted_budget: int,
):
    index = PrefixIndex(capacity, max_entries=budget)
    for address, hashes in records:
        index.record(address, list(hashes))
    assert {a: index.blocks(a) for a in index.addresses()} == blocks
    stats = index.stats()
    assert stats.entries == index.entries == sum(blocks.values())
    assert (stats.evicted_capacity, stats.evicted_budget) == (evicted_capacity, evicted_budget)
    assert stats.hashes == len(index) and stats.max_entries == budget
    assert stats.estimated_bytes > stats.container_bytes > 0


def test_over_the_budget_each_endpoint_keeps_the_head_of_its_last_prompt():
    index = PrefixIndex(100, max_entries=6)
    index.record(A, [1, 2, 3, 4])
    index.record(B, [11, 12, 13, 14])  # 8 entries for 6: each keeps its 3 most recent, the head first
    assert index.match([1, 2, 3, 4]) == {A: 3} and index.match([11, 12, 13, 14]) == {B: 3}
    index.record(C, [21, 22])  # a newcomer takes its share from the largest
    assert index.entries == 6 and {index.blocks(a) for a in (A, B, C)} == {2}
    assert index.match([1, 2]) == {A: 2} and index.match([21, 22]) == {C: 2}


def test_removing_endpoints_gives_their_entries_back():
    index = PrefixIndex(100, max_entries=10)
    index.record(A, list(range(8)))
    index.record(B, list(range(100, 108)))  # 16 for 10: 5 and 5
    index.remove_endpoint(A)
    assert index.entries == 5 and len(index) == 5
    index.record(B, list(range(200, 210)))  # B alone may now use the whole budget
    assert index.blocks(B) == 10 and index.entries == 10
    index.retain([])
    assert index.entries == 0 and len(index) == 0 and index.stats().endpoints == 0


def test_an_lru_cut_far_below_its_peak_is_compacted_in_order():
    index = PrefixIndex(100_000, max_entries=1000)
    index.record(A, list(range(1, 801)))
    index.record(B, list(range(10_001, 30_001)))  # B's table grows to 20,000 entries, then is cut to 500
    assert index.blocks(A) == index.blocks(B) == 500 and index.stats().compactions == 1
    assert sys.getsizeof(index._lrus[B]) < 64 * 1024  # sized for what is left, not for the peak
    assert index.match(list(range(10_001, 10_601))) == {B: 500}  # the head of its prompt, still in order
    index.record(B, [1])  # block 1 (A's head) is B's most recent now: the cut takes B's oldest, 10,500
    index.record(C, list(range(50_001, 50_011)))  # A and B give 5 each: B's next oldest, A's tail
    assert index.match([1]) == {A: 1, B: 1} and index.match(list(range(1, 801))) == {A: 495, B: 1}
    assert index.match(list(range(10_001, 10_601))) == {B: 494}


def test_the_index_is_invisible_to_the_garbage_collector():
    index = PrefixIndex(100)
    index.record(A, [1, 2, 3])
    assert not gc.is_tracked(index._owners) and not any(gc.is_tracked(lru) for lru in index._lrus.values())


# ---- matching by bisection ----------------------------------------------------------------------------------
_SEGMENTS = ["aaaa", "bbbb", "cccc", "dddd"]  # prompts built from 4-byte blocks of these share prefixes often
_prompts = st.lists(st.sampled_from(_SEGMENTS), min_size=0, max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.tuples(st.sampled_from([A, B, C, "10.0.0.4:80"]), _prompts), max_size=40),
    queries=st.lists(_prompts, min_size=1, max_size=8),
    capacity=st.integers(1, 20),
    budget=st.one_of(st.none(), st.integers(1, 40)),
    removed=st.lists(st.sampled_from([A, B]), max_size=1),
)
def test_bisection_matches_the_block_by_block_walk_on_anything_recorded(
    records: list[tuple[str, str]], queries: list[str], capacity: int, budget: int | None, removed: list[str]
):
    index = PrefixIndex(capacity, max_entries=budget)
    for i, (address, prompt) in enumerate(records):
        index.record(address, prompt_block_hashes("m", prompt, 4, 100))
        if removed and i == len(records) // 2:
            index.remove_endpoint(removed[0])
    for prompt in queries:
        hashes = prompt_block_hashes("m", prompt, 4, 100)
        assert index.match(hashes) == index.match_exact(hashes)
    assert index.entries == sum(index.blocks(a) for a in index.addresses()) <= (budget or 10**9)


# ---- a copy for a replica that starts ------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.tuples(st.sampled_from([A, B, C]), _prompts), max_size=40),
    queries=st.lists(_prompts, min_size=1, max_size=8),
    capacity=st.integers(1, 20),
)
def test_an_index_restored_from_another_holds_and_matches_the_same(
    records: list[tuple[str, str]], queries: list[str], capacity: int
):
    source = PrefixIndex(capacity)
    for address, prompt in records:
        source.record(address, prompt_block_hashes("m", prompt, 4, 100))
    copy = PrefixIndex(capacity)
    for address in source.addresses():
        copy.restore(address, source.lru(address))
    for address in source.addresses():
        assert copy.lru(address) == source.lru(address)  # same blocks, same recency order
    for prompt in queries:
        hashes = prompt_block_hashes("m", prompt, 4, 100)
        assert copy.match(hashes) == source.match(hashes)


def test_a_restored_list_longer_than_the_capacity_keeps_its_most_recent_blocks():
    source = PrefixIndex(10)
    source.record(A, [1, 2, 3, 4, 5, 6])  # head most recent: lru order 6, 5, 4, 3, 2, 1
    small = PrefixIndex(3)
    small.record(A, [9])  # something older of its own, evicted first
    small.restore(A, source.lru(A))
    assert source.lru(A) == [6, 5, 4, 3, 2, 1] and small.lru(A) == [3, 2, 1]
    assert small.match([1, 2, 3]) == {A: 3} and small.match([9]) == {}
