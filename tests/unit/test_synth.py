"""Synthesized prompts: exact lengths, shared id prefixes give shared token prefixes, text and ids agree."""

from __future__ import annotations

import pytest

from sim.fleet.synth import block_token_ids, prompt_text, prompt_text_and_ids, prompt_token_ids
from sim.fleet.tokenizer import NUM_WORDS, WORD_BASE, get_tokenizer

TOK = get_tokenizer()


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@pytest.mark.parametrize(
    ("hash_ids", "input_length", "block_tokens"),
    [
        ([0], 0, 512),
        ([0], 1, 512),
        ([0], 512, 512),
        ([0, 1], 513, 512),
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], 6758, 512),  # first line of the Mooncake trace
        ([7, 8, 9], 700, 512),  # fewer tokens than the ids imply: id 9 unused
        ([7, 8], 1500, 512),  # more tokens than the ids cover: id 8 extended
        ([3, 4, 5], 40, 16),
        ([10**15, 2**63], 600, 512),  # ids beyond the Feistel range
    ],
)
def test_exact_length_and_text_consistency(hash_ids: list[int], input_length: int, block_tokens: int) -> None:
    ids = prompt_token_ids(hash_ids, input_length, block_tokens)
    text = prompt_text(hash_ids, input_length, block_tokens)
    assert len(ids) == input_length
    assert TOK.encode(text) == ids
    assert TOK.decode(ids) == text
    assert prompt_text_and_ids(hash_ids, input_length, block_tokens) == (text, ids)
    assert all(WORD_BASE <= i < WORD_BASE + NUM_WORDS for i in ids)


@pytest.mark.parametrize(
    ("a", "b", "diverge_block"),
    [
        ([0, 1, 2, 3], [0, 1, 2, 3], 4),
        ([0, 1, 2, 3], [0, 1, 9, 3], 2),
        ([0, 14, 15], [0, 28, 29], 1),
        ([5, 6], [6, 5], 0),
    ],
)
def test_shared_prefix_shares_tokens_up_to_divergence_block(a: list[int], b: list[int], diverge_block: int) -> None:
    ta, tb = prompt_token_ids(a, len(a) * 512), prompt_token_ids(b, len(b) * 512)
    shared = common_prefix(ta, tb)
    if diverge_block == len(a):
        assert ta == tb
    else:
        assert diverge_block * 512 <= shared < diverge_block * 512 + 2  # differ within 2 tokens of the boundary


@pytest.mark.parametrize("n", [0, 1, 2, 3, 100, 511])
def test_partial_block_is_prefix_of_full_block(n: int) -> None:
    full = block_token_ids(42)
    assert len(full) == 512
    assert block_token_ids(42, n) == full[:n]
    assert prompt_token_ids([1, 42], 512 + n)[512:] == full[:n]


def test_extension_continues_last_block_stream() -> None:
    long = block_token_ids(8, 1500)
    assert long[:512] == block_token_ids(8)
    assert prompt_token_ids([7, 8], 1500)[512:] == long[:988]


def test_same_id_same_tokens_and_frozen_values() -> None:
    assert block_token_ids(0, 8) == [31140, 30349, 13376, 6849, 29685, 9580, 14849, 12692]
    assert block_token_ids(96533, 6) == [5037, 27279, 27395, 4570, 7743, 4294]
    assert block_token_ids(10**12, 4) == [25261, 15958, 5365, 7890]


def test_distinct_ids_differ_in_first_two_tokens() -> None:
    heads = {tuple(block_token_ids(h, 2)) for h in range(20_000)}
    assert len(heads) == 20_000
    firsts = {block_token_ids(h, 1)[0] for h in range(2000)}
    assert len(firsts) > 1900  # first tokens collide only at the birthday rate of 1/NUM_WORDS per pair


@pytest.mark.parametrize(
    ("hash_ids", "input_length", "block_tokens", "exc"),
    [
        ([], 5, 512, ValueError),
        ([1], -1, 512, ValueError),
        ([1], 5, 0, ValueError),
        (["x"], 5, 512, TypeError),
    ],
)
def test_invalid_arguments(hash_ids: list[object], input_length: int, block_tokens: int, exc: type) -> None:
    with pytest.raises(exc):
        prompt_token_ids(hash_ids, input_length, block_tokens)  # type: ignore[arg-type]


def test_empty_prompt() -> None:
    assert prompt_token_ids([], 0) == []
    assert prompt_text([], 0) == ""
