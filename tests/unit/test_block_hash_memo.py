"""BlockHashMemo gives exactly scorer.hashing's hashes, reuses shared prefixes, and stays within its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.block_hash_memo import BlockHashMemo, common_blocks
from scorer.hashing import prompt_block_hashes


@pytest.mark.parametrize(
    ("data", "other", "limit", "expected"),
    [
        (b"aaaabbbbcccc", b"aaaabbbbcccc", 3, 3),
        (b"aaaabbbbcccc", b"aaaabbbbcccX", 3, 2),  # a difference inside the last block
        (b"aaaabbbbcccc", b"aaaabbbb", 3, 2),  # the other is shorter
        (b"aaaabbbbcccc", b"Xaaabbbbcccc", 3, 0),
        (b"aaaabbbbcccc", b"aaaabbbbcccc", 1, 1),  # the limit holds
        (b"aaa", b"aaa", 3, 0),  # no full block
    ],
)
def test_common_blocks(data, other, limit, expected):
    assert common_blocks(data, other, limit, 4) == expected


@pytest.mark.parametrize(
    ("prompts", "reused", "hashed"),
    [
        ([b"a" * 64, b"a" * 64], 8, 8),  # the same prompt twice: nothing hashed the second time
        ([b"x" * 32 + b"y" * 32, b"x" * 32 + b"z" * 32], 4, 12),  # shares 4 of 8 blocks
        ([b"doc-" * 8 + b"turn 1..", b"doc-" * 8 + b"turn 1.." + b"turn 2.."], 5, 6),  # the next turn
        ([b"a" * 64, b"b" * 64], 0, 16),  # nothing shared: another first block
    ],
)
def test_a_shared_prefix_is_not_hashed_again(prompts, reused, hashed):
    memo = BlockHashMemo(8, 100)
    for data in prompts:
        assert memo.hashes("m", data) == prompt_block_hashes("m", data, 8, 100)
    assert (memo.reused_blocks, memo.hashed_blocks) == (reused, hashed)


def test_models_do_not_share_hashes():
    memo = BlockHashMemo(8, 100)
    memo.hashes("m1", b"x" * 64)
    assert memo.hashes("m2", b"x" * 64) == prompt_block_hashes("m2", b"x" * 64, 8, 100)
    assert memo.reused_blocks == 0


def test_the_memo_stays_within_its_budget_and_per_key_bound():
    memo = BlockHashMemo(8, 100, per_key=2, budget_bytes=2_000)
    for i in range(50):
        data = b"same-key" + str(i).encode() * 40
        assert memo.hashes("m", data) == prompt_block_hashes("m", data, 8, 100)
        assert memo.held_bytes <= 2_000 and len(memo) <= 2
    big = b"q" * 10_000  # more than the whole budget: hashed, not kept
    assert memo.hashes("m", big) == prompt_block_hashes("m", big, 8, 100)
    assert memo.held_bytes <= 2_000


@settings(max_examples=200)
@given(
    prompts=st.lists(st.binary(max_size=60), min_size=1, max_size=12),
    prefix=st.binary(max_size=40),
    block_size=st.integers(1, 9),
    max_blocks=st.integers(0, 12),
    budget=st.sampled_from([0, 200, 1 << 20]),
)
def test_the_memo_gives_exactly_the_hashes_of_scorer_hashing(prompts, prefix, block_size, max_blocks, budget):
    memo = BlockHashMemo(block_size, max_blocks, per_key=2, budget_bytes=budget)
    for i, tail in enumerate(prompts):
        data = prefix + tail if i % 2 else tail + prefix  # shared heads, shared tails, repeats
        model = "m" if i % 3 else "n"
        assert memo.hashes(model, data) == prompt_block_hashes(model, data, block_size, max_blocks)
