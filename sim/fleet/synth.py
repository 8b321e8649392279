"""Prompt text with exact block structure, synthesized from a trace's block hash ids.

Why it exists: a real trace (Mooncake) gives, per request, only lengths and one hash id per 512-token block;
two requests that share a leading run of ids share that prompt prefix. Routers see only text, so to replay such
a trace through them each block must become concrete text whose tokens (under `sim.fleet.tokenizer`) are a
fixed function of the block's id. Then shared id prefixes become shared text and token prefixes, and
``get_tokenizer().encode(prompt_text(...)) == prompt_token_ids(...)`` with exactly ``input_length`` tokens.

How a block's tokens are made: every token is a `` word`` token (leading space + synthetic word), so text and
tokens map one to one. Token i of block ``h`` depends only on ``(h, i)``, which makes a partial block a prefix
of the full block:

- tokens 0 and 1 are a Feistel permutation of ``h`` over ``NUM_WORDS**2`` (about 1.06e9) values, so two
  distinct ids below that bound always differ within their first two tokens, and their first tokens differ with
  probability ``1 - 1/NUM_WORDS`` (ids at or above the bound use the stream below for these two tokens too);
- tokens 2.. are a SplitMix64 stream seeded from ``h`` (numpy integer arithmetic, stable everywhere).

Lengths: the prompt is the concatenation of its blocks cut to ``input_length`` tokens, so a partial last block
is a prefix of that block, and ids past ``ceil(input_length / block_tokens)`` are unused. If ``input_length``
exceeds ``len(hash_ids) * block_tokens``, the last block is extended deterministically by continuing its own
token stream (tokens ``block_tokens, block_tokens+1, ...`` of the last id), so two such requests with the same
ids still share everything. Full blocks are kept in an LRU cache (ids, text and character offsets).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.fleet.tokenizer import NUM_WORDS, WORD_BASE, get_tokenizer, mix64, splitmix64_stream

__all__ = [
    "BLOCK_TOKENS",
    "block_token_ids",
    "prompt_text",
    "prompt_text_and_ids",
    "prompt_token_ids",
]

BLOCK_TOKENS = 512
CACHE_BLOCKS = 4096  # about 7 KB per cached 512-token block (ids, text, offsets): under 30 MB when full

_BLOCK_SALT = 0x626C6F636B5F7631
_FEISTEL_KEYS = tuple(mix64(_BLOCK_SALT + r) for r in range(4))
_PAIR_SPACE = NUM_WORDS * NUM_WORDS


def _head_pair(h: int) -> tuple[int, int] | None:
    """Word indices of tokens 0 and 1 for ``0 <= h < NUM_WORDS**2``: a bijection (balanced Feistel network)."""
    if not 0 <= h < _PAIR_SPACE:
        return None
    left, right = divmod(h, NUM_WORDS)
    for key in _FEISTEL_KEYS:
        left, right = right, (left + mix64(right ^ key)) % NUM_WORDS
    return left, right


def _word_indices(h: int, start: int, stop: int) -> np.ndarray:
    """Word indices (int64) of tokens ``start..stop-1`` of block ``h``'s infinite token stream."""
    z = splitmix64_stream(mix64(h ^ _BLOCK_SALT), start, stop)
    words = (z % np.uint64(NUM_WORDS)).astype(np.int64)
    head = _head_pair(h) if start < 2 else None
    if head is not None:
        for i in range(start, min(2, stop)):
            words[i - start] = head[i]
    return words


@dataclass(frozen=True, slots=True)
class _Block:
    ids: np.ndarray  # int64 token ids
    text: str
    offsets: np.ndarray  # offsets[k] = len(text of the first k tokens), k = 0..len(ids)

    def cut(self, n: int) -> tuple[np.ndarray, str]:
        return self.ids[:n], self.text[: int(self.offsets[n])]


def _make_block(h: int, start: int, stop: int) -> _Block:
    tok = get_tokenizer()
    ids = _word_indices(h, start, stop) + WORD_BASE
    words = tok.words
    text = "".join([" " + words[w] for w in (ids - WORD_BASE).tolist()])
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(tok.text_lengths[ids], out=offsets[1:])
    ids.flags.writeable = False
    offsets.flags.writeable = False
    return _Block(ids, text, offsets)


@functools.lru_cache(maxsize=CACHE_BLOCKS)
def _full_block(h: int, block_tokens: int) -> _Block:
    return _make_block(h, 0, block_tokens)


def _check_id(h: object) -> int:
    try:
        return int(operator.index(h))  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"hash id must be an integer, got {type(h).__name__}") from None


def block_token_ids(hash_id: int, n_tokens: int = BLOCK_TOKENS) -> list[int]:
    """The first ``n_tokens`` token ids of block ``hash_id`` (same id, same tokens; shorter is a prefix)."""
    h = _check_id(hash_id)
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    if n_tokens <= BLOCK_TOKENS:
        return _full_block(h, BLOCK_TOKENS).ids[:n_tokens].tolist()
    return (_word_indices(h, 0, n_tokens) + WORD_BASE).tolist()


def _segments(hash_ids: Sequence[int], input_length: int, block_tokens: int) -> list[tuple[np.ndarray, str]]:
    if block_tokens <= 0:
        raise ValueError(f"block_tokens must be > 0, got {block_tokens}")
    if input_length < 0:
        raise ValueError(f"input_length must be >= 0, got {input_length}")
    if input_length > 0 and len(hash_ids) == 0:
        raise ValueError(f"no hash ids to synthesize {input_length} tokens from")
    segs: list[tuple[np.ndarray, str]] = []
    left = input_length
    for h in hash_ids:
        if left <= 0:
            break
        n = min(left, block_tokens)
        segs.append(_full_block(_check_id(h), block_tokens).cut(n))
        left -= n
    if left > 0:  # longer than its blocks: continue the last block's own stream
        ext = _make_block(_check_id(hash_ids[-1]), block_tokens, block_tokens + left)
        segs.append((ext.ids, ext.text))
    return segs


def prompt_token_ids(hash_ids: Sequence[int], input_length: int, block_tokens: int = BLOCK_TOKENS) -> list[int]:
    """Exactly ``input_length`` token ids: the blocks of ``hash_ids`` in order, cut to length (module docstring)."""
    segs = _segments(hash_ids, input_length, block_tokens)
    if not segs:
        return []
    return np.concatenate([ids for ids, _ in segs]).tolist()


def prompt_text(hash_ids: Sequence[int], input_length: int, block_tokens: int = BLOCK_TOKENS) -> str:
    """Text whose encoding is exactly ``prompt_token_ids(hash_ids, input_length, block_tokens)``."""
    return "".join([text for _, text in _segments(hash_ids, input_length, block_tokens)])


def prompt_text_and_ids(
    hash_ids: Sequence[int], input_length: int, block_tokens: int = BLOCK_TOKENS
) -> tuple[str, list[int]]:
    """Both `prompt_text` and `prompt_token_ids` in one pass."""
    segs = _segments(hash_ids, input_length, block_tokens)
    ids = np.concatenate([i for i, _ in segs]).tolist() if segs else []
    return "".join([t for _, t in segs]), ids
