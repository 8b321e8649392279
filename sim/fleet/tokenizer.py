"""Deterministic, lossless, fast tokenizer for the vLLM fleet twin.

Why it exists: the twin has no real model, yet the routers in front of it (ours, sglang-router, vllm-router) see
only text, and the twin's prefix cache works on token ids. So text and ids must map onto each other exactly,
the same way in every process and every Python version, and synthesized prompt text must have a known token
count (see `sim.fleet.synth`), all without loading a real vocabulary.

Design (vocabulary of exactly 65,536 ids):

- ids 0..255 are byte tokens: any text outside the vocabulary is encoded as its UTF-8 bytes (with
  ``surrogatepass``), so ``decode(encode(t)) == t`` for every Python string, lone surrogates included.
- ids 256..271 are special tokens written ``<|name|>`` (``<|endoftext|>`` is EOS; role markers such as
  ``<|user|>`` are single tokens); unknown ``<|...|>`` text is just bytes.
- ids 272.. are 32,632 synthetic pronounceable words enumerated in a fixed order from fixed syllable lists
  (1, then 2, then 3 syllables; see `_make_words`): first each word with a leading space (`` word``), then
  each bare word (``word``).
- `encode_general` is one compiled regex ``findall`` plus one dict lookup per piece; a piece not in the dict
  falls back to a space token plus a bare word, or to bytes. `encode` first tries a faster path for text of
  words and spaces only (``str.split`` plus dict lookups) and defers to `encode_general` otherwise.
- Nothing uses Python's ``hash()`` or an RNG with version-dependent streams; `generate_token_ids` uses
  SplitMix64 in numpy, whose integer arithmetic is exact.

Chat template (`Tokenizer.apply_chat_template`)::

    <|system|>\\n{content}<|end|>\\n<|user|>\\n{content}<|end|>\\n ... <|assistant|>\\n

Roles are system, user, assistant and tool (developer is written as system); content is a string, None, or an
OpenAI content-part list whose parts are all ``{"type": "text", "text": ...}``. With ``continue_final_message`` the
last message is left open (no ``<|end|>\\n``) for the model to continue, and no generation prompt follows.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "EOS_TOKEN_ID",
    "NUM_BYTE_TOKENS",
    "NUM_WORDS",
    "VOCAB_SIZE",
    "WORD_BASE",
    "Tokenizer",
    "generate_token_ids",
    "get_tokenizer",
    "mix64",
    "splitmix64_stream",
]

VOCAB_SIZE = 65_536
NUM_BYTE_TOKENS = 256
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
    *(f"<|reserved_{i}|>" for i in range(10)),
)
SPECIAL_BASE = NUM_BYTE_TOKENS
WORD_BASE = SPECIAL_BASE + len(SPECIAL_TOKENS)  # 272: id of the first " word" token
NUM_WORDS = (VOCAB_SIZE - WORD_BASE) // 2  # 32,632 words, each as " word" and as "word"
BARE_WORD_BASE = WORD_BASE + NUM_WORDS
EOS_TOKEN_ID = SPECIAL_BASE  # <|endoftext|>

_ONSETS = ("", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "ch", "sh", "th", "br", "tr", "st")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_ROLE_MARKERS = {
    "system": "<|system|>",
    "developer": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "tool": "<|tool|>",
}
_END = "<|end|>"

# A piece is: a special-looking marker, an optional space plus a run of a-z, a run of anything else but a-z,
# space and "<", a lone space, or a lone "<". The alternatives cover every character, so the pieces
# concatenate back to the input exactly.
_PIECE_RE = re.compile(r"<\|[a-z0-9_]+\|>| ?[a-z]+|[^a-z <]+| |<")

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_OUTPUT_SALT = 0x6F75747075745F31  # separates the output-token stream from the block streams of synth.py


def mix64(x: int) -> int:
    """SplitMix64 finalizer on one Python int (taken modulo 2**64): a fixed, well-mixed 64-bit function."""
    z = x & _M64
    z = ((z ^ (z >> 30)) * _MIX1) & _M64
    z = ((z ^ (z >> 27)) * _MIX2) & _M64
    return z ^ (z >> 31)


def splitmix64_stream(seed: int, start: int, stop: int) -> np.ndarray:
    """Outputs ``start..stop-1`` of the SplitMix64 sequence seeded with ``seed``, as a uint64 array.

    Output i is ``mix64(seed + (i + 1) * golden)``; each is computed independently, so any slice of the stream is
    cheap and a shorter stream is always a prefix of a longer one. numpy's uint64 array arithmetic wraps modulo
    2**64 exactly, so the values are the same on every platform and numpy version.
    """
    if stop <= start:
        return np.zeros(0, dtype=np.uint64)
    idx = np.arange(start + 1, stop + 1, dtype=np.uint64)
    z = idx * np.uint64(_GOLDEN) + np.uint64(seed & _M64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def _make_words(n: int) -> list[str]:
    """The first ``n`` distinct syllable words, in a fixed order.

    A syllable is onset + vowel; only a word's first syllable may have the empty onset (no vowel clusters like
    "aalo"). Order: all 1-syllable words, all 2-syllable words, then 3-syllable words visited with a fixed
    stride through their index space so the ones kept are spread over all first syllables.
    """
    first = [o + v for o in _ONSETS for v in _VOWELS]
    later = [o + v for o in _ONSETS if o for v in _VOWELS]
    words: list[str] = []
    seen: set[str] = set()
    candidates: list[str] = list(first) + [a + b for a in first for b in later]
    for w in candidates:
        if w not in seen:
            seen.add(w)
            words.append(w)
            if len(words) == n:
                return words
    n_later = len(later)
    total = len(first) * n_later * n_later
    stride = 1_000_003  # prime, coprime with total: k -> k * stride % total visits every index once
    for k in range(total):
        j = k * stride % total
        a, rest = divmod(j, n_later * n_later)
        b, c = divmod(rest, n_later)
        w = first[a] + later[b] + later[c]
        if w not in seen:
            seen.add(w)
            words.append(w)
            if len(words) == n:
                return words
    raise AssertionError("syllable lists too small for the vocabulary")  # pragma: no cover


def _byte_piece(b: int) -> str:
    return chr(b) if 0x20 <= b < 0x7F else f"<0x{b:02X}>"


class Tokenizer:
    """The twin's tokenizer; see the module docstring for the vocabulary layout. Use `get_tokenizer()`."""

    def __init__(self) -> None:
        self.vocab_size = VOCAB_SIZE
        self.eos_token_id = EOS_TOKEN_ID
        self.eos_token = SPECIAL_TOKENS[0]
        self.words: tuple[str, ...] = tuple(_make_words(NUM_WORDS))
        # Text of each non-byte id (byte ids keep "" here: they are decoded as UTF-8 byte runs).
        texts = [""] * NUM_BYTE_TOKENS + list(SPECIAL_TOKENS)
        texts += [" " + w for w in self.words] + list(self.words)
        assert len(texts) == VOCAB_SIZE
        self._texts = texts
        self._pieces = [_byte_piece(b) for b in range(NUM_BYTE_TOKENS)] + texts[NUM_BYTE_TOKENS:]
        lookup: dict[str, int] = {chr(b): b for b in range(128)}
        for i in range(NUM_BYTE_TOKENS, VOCAB_SIZE):
            lookup[texts[i]] = i  # a 1-letter word replaces its ASCII byte: same text, either way
        self._lookup = lookup
        # For the fast path: the id of " " + part for each part of text.split(" ") after the first.
        self._after_space: dict[str, int] = {w: WORD_BASE + i for i, w in enumerate(self.words)}
        self._after_space[""] = 0x20
        self.special_tokens: Mapping[str, int] = {t: SPECIAL_BASE + i for i, t in enumerate(SPECIAL_TOKENS)}
        # Character length of each id's text (bytes count 1, exact for ASCII), used by synth for offsets.
        self.text_lengths = np.array([len(t) if i >= NUM_BYTE_TOKENS else 1 for i, t in enumerate(texts)], np.int32)

    # ---- encode / decode --------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; lossless (``decode(encode(text)) == text``) for every string.

        Fast path for text made only of vocabulary words and spaces (what `sim.fleet.synth` and
        `generate_token_ids` produce): ``str.split(" ")`` and one dict lookup per part, about 3x faster than
        the regex. Any part that is not a word (or an empty part, i.e. a lone space) sends the whole text to
        `encode_general`, so both paths give the same ids by construction (tests check this).
        """
        parts = text.split(" ")
        ids = list(map(self._after_space.get, parts))
        first = parts[0]
        if first:
            ids[0] = self._lookup.get(first)
        else:
            del ids[0]
        if None in ids:
            return self.encode_general(text)
        return ids  # type: ignore[return-value]  # no None left

    def encode_general(self, text: str) -> list[int]:
        """`encode` for any text: one compiled regex splits it into pieces, a dict maps each piece to an id."""
        pieces = _PIECE_RE.findall(text)
        get = self._lookup.get
        ids = [get(p, -1) for p in pieces]
        if -1 not in ids:
            return ids
        out: list[int] = []
        for p, i in zip(pieces, ids, strict=True):
            if i >= 0:
                out.append(i)
                continue
            if p[0] == " " and (j := get(p[1:], -1)) >= 0:
                out.append(0x20)
                out.append(j)
            else:
                out.extend(p.encode("utf-8", "surrogatepass"))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``. Byte-token runs are decoded as UTF-8; an invalid run decodes with U+FFFD replacements.

        Raises ValueError for an id outside ``0..vocab_size-1``.
        """
        if not ids:
            return ""
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= VOCAB_SIZE:
            raise ValueError(f"token id out of vocabulary (size {VOCAB_SIZE}): {lo if lo < 0 else hi}")
        texts = self._texts
        if lo >= NUM_BYTE_TOKENS:
            return "".join([texts[i] for i in ids])
        out: list[str] = []
        buf = bytearray()
        for i in ids:
            if i < NUM_BYTE_TOKENS:
                buf.append(i)
                continue
            if buf:
                out.append(_decode_bytes(buf))
                buf.clear()
            out.append(texts[i])
        if buf:
            out.append(_decode_bytes(buf))
        return "".join(out)

    def id_to_piece(self, token_id: int) -> str:
        """Readable piece of one id: the text of a word or special token, the char of a printable ASCII byte,
        else ``<0xNN>``."""
        if not 0 <= token_id < VOCAB_SIZE:
            raise ValueError(f"token id out of vocabulary (size {VOCAB_SIZE}): {token_id}")
        return self._pieces[token_id]

    def word_token_id(self, index: int, *, leading_space: bool = True) -> int:
        """Id of word number ``index`` (0..NUM_WORDS-1), as `` word`` or as bare ``word``."""
        if not 0 <= index < NUM_WORDS:
            raise ValueError(f"word index out of range 0..{NUM_WORDS - 1}: {index}")
        return (WORD_BASE if leading_space else BARE_WORD_BASE) + index

    # ---- chat --------------------------------------------------------------------------------------------
    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, continue_final_message: bool = False
    ) -> str:
        """Render OpenAI-style messages with the template in the module docstring. Raises ValueError on bad input."""
        if not isinstance(messages, list):
            raise ValueError("messages must be a list")
        if continue_final_message and (add_generation_prompt or not messages):
            raise ValueError("continue_final_message needs a final message and no generation prompt")
        parts: list[str] = []
        for n, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise ValueError(f"messages[{n}] must be an object")
            role = msg.get("role")
            marker = _ROLE_MARKERS.get(role) if isinstance(role, str) else None
            if marker is None:
                raise ValueError(f"messages[{n}].role must be one of {sorted(_ROLE_MARKERS)}, got {role!r}")
            parts.append(f"{marker}\n{_content_text(msg.get('content'), n)}{_END}\n")
        if continue_final_message:
            parts[-1] = parts[-1].removesuffix(f"{_END}\n")
        elif add_generation_prompt:
            parts.append(_ROLE_MARKERS["assistant"] + "\n")
        return "".join(parts)


def _decode_bytes(buf: bytearray) -> str:
    try:
        return buf.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return buf.decode("utf-8", "replace")


def _content_text(content: object, n: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"messages[{n}].content[{k}]: only 'text' parts are supported, got {kind!r}")
            text = part.get("text")
            if not isinstance(text, str):
                raise ValueError(f"messages[{n}].content[{k}].text must be a string")
            texts.append(text)
        return "".join(texts)
    raise ValueError(f"messages[{n}].content must be a string, null or a list of text parts")


@functools.cache
def get_tokenizer() -> Tokenizer:
    """The process-wide tokenizer (built once, about 30 ms; immutable after construction, so sharing is safe)."""
    return Tokenizer()


def generate_token_ids(seed: int, n: int) -> list[int]:
    """``n`` deterministic `` word`` token ids for the twin's output (decodes to space-separated words).

    Token i is word ``splitmix64(seed ^ salt)[i] % NUM_WORDS``; a shorter output is a prefix of a longer one.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    z = splitmix64_stream(seed ^ _OUTPUT_SALT, 0, n)
    return (z % np.uint64(NUM_WORDS) + np.uint64(WORD_BASE)).astype(np.int64).tolist()
